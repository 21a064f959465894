# -*- coding: utf-8 -*-
# Copyright: Lifeboat contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Callback plugin lifeboat.dr.lifeboat_timer: per-task start/end times to a JSON file."""

from __future__ import annotations

DOCUMENTATION = r'''
---
name: lifeboat_timer
type: aggregate
short_description: Record when each task started and ended, to a JSON file
version_added: 0.1.0
description:
  - Writes one record per task and host (play, task, host, status, start, end and
    duration in seconds since the epoch) to the file named by E(LIFEBOAT_TIMER_FILE) when
    the playbook ends. The DR drill harness reads it to build the recovery timeline.
  - Nothing is written when E(LIFEBOAT_TIMER_FILE) is not set. Task results are not
    recorded, so no secret reaches the file.
requirements:
  - enable in configuration, for example C(ANSIBLE_CALLBACKS_ENABLED=lifeboat.dr.lifeboat_timer)
author:
  - Lifeboat contributors (!UNKNOWN)
'''

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Collects task timings; writes them atomically (temporary file + rename) at the end."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'lifeboat.dr.lifeboat_timer'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.records = []
        self.started = {}
        self.play_name = ''
        self.playbook_started = time.time()

    def v2_playbook_on_play_start(self, play):
        self.play_name = play.get_name()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.started[task._uuid] = time.time()

    def v2_playbook_on_handler_task_start(self, task):
        self.started[task._uuid] = time.time()

    def _record(self, result, status):
        task = result._task
        end = time.time()
        start = self.started.get(task._uuid, end)
        self.records.append({
            'play': self.play_name,
            'task': task.get_name(),
            'action': task.action,
            'host': result._host.get_name(),
            'status': status,
            'start': start,
            'end': end,
            'duration_s': round(end - start, 3),
        })

    def v2_runner_on_ok(self, result):
        self._record(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, 'ignored' if ignore_errors else 'failed')

    def v2_runner_on_skipped(self, result):
        self._record(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._record(result, 'unreachable')

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get('LIFEBOAT_TIMER_FILE')
        if not path:
            return
        document = {'start': self.playbook_started, 'end': time.time(), 'tasks': self.records}
        tmp = path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as out:
            json.dump(document, out, indent=1)
        os.replace(tmp, path)
