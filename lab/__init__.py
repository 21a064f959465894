"""The lab: private MariaDB, Redis, OpenBao and a demo app on this machine.

Run it as ``python -m lab up|down|status|env|seed|service NAME start|stop|restart|status``.
From Python::

    import lab
    lab.env()                                # dict of LAB_* values (secrets inside!)
    lab.services.start("mysql", state_dir)   # see lab/services.py for the rest
"""

from lab import services
from lab.envinfo import env

__all__ = ["env", "services"]
