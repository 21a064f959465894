"""The compose lab: the lab services as Compose services on podman (see lab/compose/lab.py, docs/lab.md)."""
