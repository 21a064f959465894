# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin lifeboat.dr.run_progress: poll an async Lifeboat run, one progress line per interval."""

from __future__ import annotations

import os
import time

from ansible import constants as C
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

# A run tethered to the polls (its host cannot see the controller: module result ``tethered``) is
# polled at least every TETHER_BEAT_S; the lines still come once per interval.
from ansible_collections.lifeboat.dr.plugins.module_utils.store.runstatus import TETHER_BEAT_S

display = Display()

#: Between the progress lines the job is polled silently, each wait at most this share of the time
#: it has run so far (at least MIN_BEAT_S): a step is seen finished at most half its run time after
#: it ends (and at most one interval), with few polls: each poll is a module run on the host.
SILENT_BEAT_SHARE = 0.5
MIN_BEAT_S = 1.0


def stdout_is_json() -> bool:
    """True when the stdout callback writes one JSON document (progress lines then go to stderr)."""
    return "json" in str(C.DEFAULT_STDOUT_CALLBACK or "").lower()


class ActionModule(ActionBase):
    """Waits on the controller; each poll runs the module ``lifeboat.dr.run_progress`` on the host."""

    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        args = self._task.args
        job = args.get("job")
        if not isinstance(job, dict):
            return {"failed": True, "msg": "run_progress: job must be the registered result of the step"}
        if not job.get("ansible_job_id") or job.get("finished"):
            return dict(job)  # a synchronous run (check mode, progress off): its result as it is
        interval = max(0.2, float(args.get("interval_s") or 15.0))
        label = str(args.get("label") or "run")
        host = task_vars.get("inventory_hostname", "?") if task_vars else "?"
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        module_args = {"job": {"ansible_job_id": job["ansible_job_id"]}, "store": args.get("store"),
                       "progress_id": args.get("progress_id"), "interval_s": interval, "label": label,
                       "jid": job["ansible_job_id"], "async_dir": async_dir}
        try:
            return self._wait(module_args, task_vars, interval, host)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _wait(self, module_args, task_vars, interval, prefix):
        """Poll until the job is finished; print a progress line every ``interval`` s; return the
        job's own result. Ends with a failure when the controller that forked this worker is gone
        (the run then stops itself).

        Schedule (fixed times from the start, not drifting by the polls' own time): the lines are
        due at ``interval``, ``2 x interval``, ... and a poll lands on each. Between them the job
        is polled silently, each wait at most :data:`SILENT_BEAT_SHARE` of the time run so far (at
        least :data:`MIN_BEAT_S`): a step is seen finished soon after it ends (a 21 s restore step
        at 22.5 s, not at the next line at 30 s: that wait was part of every RTO). A tethered run (the
        module says its host cannot see this controller) is polled at most :data:`TETHER_BEAT_S`
        apart. Each poll tells the module the longest wait until the next one (``poll_beat_s``,
        the tether's promise).
        """
        controller = os.getppid()  # the ansible-playbook process that forked this worker
        start = time.monotonic()
        line_due, tethered = start + interval, False
        scheduled = start + min(MIN_BEAT_S, interval)
        while True:
            time.sleep(max(0.0, scheduled - time.monotonic()))
            if os.getppid() != controller:
                return {"failed": True, "finished": False,
                        "msg": "run_progress: the controller (ansible-playbook) is gone; the run stops itself"}
            beat = silent_beat(scheduled - start, interval)
            beat = min(beat, TETHER_BEAT_S) if tethered else beat
            module_args["poll_beat_s"] = beat
            result = self._execute_module(module_name="lifeboat.dr.run_progress", module_args=module_args,
                                          task_vars=task_vars)
            if result.get("finished") or result.get("failed"):
                result.pop("progress", None)
                result.pop("progress_line", None)
                result.pop("tethered", None)
                result["finished"] = True
                return result
            if result.get("tethered"):
                tethered, beat = True, min(beat, TETHER_BEAT_S)
            now = time.monotonic()
            if scheduled >= line_due - 1e-6:
                display.display(f"{prefix} | {result.get('progress_line')}", stderr=stdout_is_json())
                line_due += interval
                while line_due <= now:  # a poll that took longer than an interval: no burst of lines
                    line_due += interval
            scheduled = max(min(scheduled + beat, line_due), now + 0.05)


def silent_beat(elapsed_s: float, interval_s: float) -> float:
    """Seconds until the next silent poll of a job that has run ``elapsed_s``: its share
    :data:`SILENT_BEAT_SHARE` of that, at least :data:`MIN_BEAT_S`, at most one interval."""
    return min(interval_s, max(MIN_BEAT_S, elapsed_s * SILENT_BEAT_SHARE))
