"""``--dist loadgroup`` whose groups hold: every test marked ``xdist_group(name)`` runs on one pytest-xdist worker.

pytest-xdist 3.8 tells the controller a test's group by appending ``@name`` to its node id on the worker, and
pytest 9.2 no longer lets a plugin change a node id: the suffix is lost and every test is dealt out on its own, so
a table run as one play (``support.table_play``) would run once per worker. Here each worker writes the groups it
collected to a directory the controller names in ``MODELSEED_XDIST_GROUPS``, and the controller's scheduler reads
them there. Node ids stay as they are. A pytest plugin: ``tests/conftest.py`` loads it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

GROUPS_DIR = "MODELSEED_XDIST_GROUPS"


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def _distributes_by_group(config) -> bool:
    return config.getoption("dist", "no") == "loadgroup" and bool(config.getoption("numprocesses", None))


def pytest_configure(config) -> None:
    # The controller names the directory before it starts the workers, which inherit its environment.
    if not _is_worker(config) and _distributes_by_group(config):
        os.environ[GROUPS_DIR] = tempfile.mkdtemp(prefix="modelseed-xdist-groups-")


def pytest_unconfigure(config) -> None:
    if not _is_worker(config) and _distributes_by_group(config):
        shutil.rmtree(os.environ.pop(GROUPS_DIR, ""), ignore_errors=True)


def group_of(item) -> str | None:
    """The item's group as pytest-xdist names it: its ``xdist_group`` names, sorted and joined by ``_``."""
    names = {str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")) for mark in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) or None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    directory = os.environ.get(GROUPS_DIR)
    if not _is_worker(config) or not directory:
        return
    groups = {item.nodeid: group for item in items if (group := group_of(item))}
    path = Path(directory) / f"{config.workerinput['workerid']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups), encoding="utf-8")
    tmp.replace(path)


class GroupScheduling(LoadScopeScheduling):
    """Load scheduling in work units: a group's tests form one unit, every other test a unit of its own. Units go out
    in collection order (``--no-loadscope-reorder``) or, by default, the largest first."""

    @functools.cached_property
    def groups(self) -> dict[str, str]:
        # Read once every worker has collected (and written its file): the scheduler asks only then.
        found: dict[str, str] = {}
        for path in sorted(Path(os.environ[GROUPS_DIR]).glob("*.json")):
            found.update(json.loads(path.read_text(encoding="utf-8")))
        return found

    def _split_scope(self, nodeid: str) -> str:
        group = self.groups.get(nodeid)
        return f"group {group}" if group else nodeid


def pytest_xdist_make_scheduler(config, log):
    return GroupScheduling(config, log) if config.getoption("dist", "no") == "loadgroup" else None
