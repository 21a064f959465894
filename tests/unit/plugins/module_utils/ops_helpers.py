"""Small real stores for the operations tests (sets written with backupset, no servers)."""

from __future__ import annotations

from pathlib import Path

from ansible_collections.lifeboat.dr.plugins.module_utils.format import keys
from ansible_collections.lifeboat.dr.plugins.module_utils.store.catalog import Store


def keyring(folder: Path) -> keys.KeyRing:
    """A key ring with a fresh primary key file in ``folder``."""
    path = folder / "primary.key"
    if not path.exists():
        keys.create_key_file(path)
    return keys.KeyRing(keys.FileKEK.load(path))


def small_set(store: Store, ring: keys.KeyRing, set_type: str = "full", components=("redis",),
              size: int = 1000) -> str:
    """Publish a set with one small artifact per component; returns its id."""
    with store.begin_set(set_type, list(components), ring) as writer:
        for comp in components:
            with writer.artifact(comp, "data.bin") as out:
                out.write(b"x" * size)
        writer.publish()
        return writer.set_id
