"""Where a machine's CPU went between two moments: the kernel's categories (/proc/stat) and each process by name.

A process counts from its start when it began after the first snapshot; one that ended before the second is missed
(short module runs): the categories of the whole machine still hold its time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
CATEGORIES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class Snapshot:
    machine: tuple[int, ...]  # clock ticks of every CPU together, per category
    processes: dict[int, tuple[str, int]]  # pid: (name, user and system ticks)


def process_ticks() -> dict[int, tuple[str, int]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            name = raw[raw.index("(") + 1:raw.rindex(")")]
            fields = raw.rsplit(")", 1)[1].split()
            found[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))
    return found


def snapshot() -> Snapshot:
    values = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:1 + len(CATEGORIES)]
    return Snapshot(tuple(int(v) for v in values), process_ticks())


def cpu_between(before: Snapshot, after: Snapshot, top: int = 8) -> dict:
    """{"busy": share of all CPUs, "seconds": {category: CPU seconds}, "processes": {name: CPU seconds}} (the ``top``
    names that used most, processes of one name added up; the machine's other work is in them too)."""
    spent = {name: (b - a) / TICK for name, a, b in zip(CATEGORIES, before.machine, after.machine, strict=True)}
    total = sum(spent.values())
    by_name: dict[str, float] = {}
    for pid, (name, ticks) in after.processes.items():
        earlier = before.processes.get(pid)
        used = ticks - earlier[1] if earlier and earlier[0] == name else ticks
        by_name[name] = by_name.get(name, 0.0) + used / TICK
    busiest = sorted(by_name.items(), key=lambda item: -item[1])[:top]
    return {"busy": 1 - (spent["idle"] + spent["iowait"]) / total if total else 0.0,
            "seconds": {name: round(value, 2) for name, value in spent.items()},
            "processes": {name: round(value, 2) for name, value in busiest}}
