"""Make the collection importable as ``ansible_collections.modelseed.fleet`` and ``tests/`` as a root."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BUILD = REPO / ".build"
COLLECTION_LINK = BUILD / "ansible_collections" / "modelseed" / "fleet"

if not os.path.lexists(COLLECTION_LINK):
    COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
    try:
        COLLECTION_LINK.symlink_to(os.path.relpath(REPO, COLLECTION_LINK.parent), target_is_directory=True)
    except FileExistsError:  # another pytest worker made it first
        pass

for path in (str(BUILD), str(TESTS)):
    if path not in sys.path:
        sys.path.insert(0, path)

os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(BUILD))


def pytest_configure(config):
    """Give this run a tally of its own, unless the caller (tools/stress.py) chose the file; with CI set, make a
    skipped test fail the run (support/ci_skips.py); under pytest-xdist, keep each xdist_group on one worker
    (support/xdist_groups.py)."""
    if not os.environ.get("MODELSEED_RELIABILITY_LOG") and not hasattr(config, "workerinput"):
        from support import reliability

        os.environ["MODELSEED_RELIABILITY_LOG"] = str(reliability.fresh_log())
    config.pluginmanager.import_plugin("support.ci_skips")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.import_plugin("support.xdist_groups")


def pytest_terminal_summary(terminalreporter, config):
    """Write the tally of the faults injected in this run to .build/reliability/report.md, and say how they ended.

    Under pytest-xdist only the controller does, once every worker has added its rows to the run's log."""
    if hasattr(config, "workerinput"):
        return
    from support import reliability

    rows = reliability.read()
    if not rows:
        return
    reliability.REPORT.parent.mkdir(parents=True, exist_ok=True)
    reliability.REPORT.write_text(reliability.render(rows, title="Reliability of this test run"))
    terminalreporter.write_sep("-", "reliability")
    terminalreporter.write_line(f"{reliability.summary_line(rows)} (table: {reliability.REPORT.relative_to(REPO)})")
