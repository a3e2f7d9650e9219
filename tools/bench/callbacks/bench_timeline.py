"""Ansible callback for the benchmarks: one JSON line per task result, with when it started and ended on that host.

Enabled with ANSIBLE_CALLBACK_PLUGINS=<this directory> ANSIBLE_CALLBACKS_ENABLED=bench_timeline; writes to the file
named by MODELSEED_BENCH_TIMELINE. Times are time.monotonic(): the clock is the machine's, so another process on
it (the benchmark) can compare them with its own.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._starts: dict[tuple[str, str], float] = {}
        self._path = os.environ.get("MODELSEED_BENCH_TIMELINE")
        self._play = ""

    def v2_playbook_on_play_start(self, play) -> None:
        self._play = play.get_name()

    def v2_runner_on_start(self, host, task) -> None:
        self._starts[(host.get_name(), task._uuid)] = time.monotonic()  # pylint: disable=protected-access

    def _record(self, result, status: str) -> None:
        end = time.monotonic()
        host, task = result._host.get_name(), result._task  # pylint: disable=protected-access
        start = self._starts.pop((host, task._uuid), end)  # pylint: disable=protected-access
        if self._path:
            with open(self._path, "a", encoding="utf-8") as out:
                out.write(json.dumps({"play": self._play, "host": host, "task": task.get_name(), "action": task.action, "status": status,
                                      "start": start, "end": end}) + "\n")

    def v2_runner_on_ok(self, result) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result) -> None:
        self._record(result, "unreachable")
