"""The demo application run by the lab (see app.py)."""
