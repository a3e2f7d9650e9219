"""The rows of a parameter table as the tasks of one play: ansible-playbook starts once for the table, not once a row.

A module-scoped fixture prepares every row in a directory of its own and calls ``run_table``; each parametrized
test then reads its own row and asserts on it as it did on a run of its own. Rows must not share anything a task
changes. Mark the test ``table_play("name")``: with ``--dist loadgroup`` its rows go to one pytest-xdist worker,
which runs the table once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from .playbook import run_tasks


@dataclass
class Row:
    result: dict  # the task's registered result
    before: Any  # what ``look(case)`` saw before the play
    after: Any  # and after it


def run_table(tasks: dict[str, dict], look: Callable[[str], Any] = lambda case: None, **options) -> dict[str, Row]:
    """Run ``tasks`` (one per case, in order) in one play; each case's result and ``look(case)`` before and after."""
    before = {case: look(case) for case in tasks}
    run = run_tasks(list(tasks.values()), **options)
    return {case: Row(result, before[case], look(case)) for case, result in zip(tasks, run.results, strict=True)}


def table_play(name: str):
    """The mark of a test whose rows run as one play: one xdist group, so one worker runs the table."""
    return pytest.mark.xdist_group(name)
