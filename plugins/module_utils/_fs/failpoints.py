# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named steps where a test can kill a run: inert unless ``MODELSEED_FAILPOINT`` names the step.

``MODELSEED_FAILPOINT=swap.after`` kills the process with SIGKILL (no ``finally`` block, no cleanup runs)
the first time it reaches ``failpoint('swap.after')``; ``swap.after@2`` the second time. Steps:

- ``fetch.before-rename`` / ``fetch.after-rename``: a verified download moving from partial/ to incoming/;
- ``swap.before`` / ``swap.after``: the rename or exchange that puts a model directory in place;
- ``swap.aside``: between the two renames where the kernel cannot exchange;
- ``record.before`` / ``record.after``: the record of the new model directory taking its place.
"""


import os
import signal
import threading

ENV = 'MODELSEED_FAILPOINT'
_HITS = {}
_LOCK = threading.Lock()


def failpoint(step):
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _sep, nth = wanted.partition('@')
    if name != step:
        return
    with _LOCK:
        _HITS[step] = _HITS.get(step, 0) + 1
        hit = _HITS[step]
    if hit == (int(nth) if nth.isdigit() else 1):
        os.kill(os.getpid(), signal.SIGKILL)
