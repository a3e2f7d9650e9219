"""Writes the results a play saved with ``set_stats`` (``support.playbook.results_task``) to the file it names.

Enabled with ANSIBLE_CALLBACK_PLUGINS=<this directory> ANSIBLE_CALLBACKS_ENABLED=play_results (``support.playbook``
does). ``set_stats`` runs on the controller and starts no module, where a ``copy`` task would start two.
"""

from __future__ import annotations

import os

from ansible.plugins.callback import CallbackBase

STAT = "modelseed_play_results"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "play_results"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats):
        saved = stats.custom.get("_run", {}).get(STAT)
        if not saved:
            return
        path = str(saved["path"])
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(str(saved["results"]))
        os.replace(tmp, path)
