"""Kill a process and everything it started, by PID: ansible runs modules in sessions of their
own, so killing the ansible-playbook process group leaves the module running. ``freeze_tree``
stops a tree first, so what it was doing at that moment can be looked at before the kill."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

# States of /proc/PID/stat in which a process runs no more: a zombie has exited, only its parent has not reaped it.
DEAD_STATES = frozenset("ZXx")
STOPPED_STATES = frozenset("Tt")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def state(pid: int) -> str | None:
    """The one-letter state of ``pid`` in /proc/PID/stat (R, S, D, T, Z, ...), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and has not exited (a zombie is dead)."""
    found = state(pid)
    return found is not None and found not in DEAD_STATES


def command_line(pid: int) -> list[str]:
    try:
        return [arg.decode(errors="replace") for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if arg]
    except OSError:
        return []


def _children_of(pid: int) -> list[int]:
    """The children of ``pid`` from /proc/PID/task/TID/children, one file per thread (a thread's children are its own)."""
    children: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:  # gone already
        return children
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as listing:
                children.extend(int(child) for child in listing.read().split())
        except OSError:
            continue
    return children


# Kernels built without CONFIG_PROC_CHILDREN have no children files: then every process's stat is read instead.
_HAS_CHILDREN_FILES = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def descendants(pid: int) -> list[int]:
    # Walking down from pid reads a few files per process of the tree, not the stat of every process on the machine:
    # ProcessWatch asks every 20 ms, on a machine running hundreds of processes.
    tree = None if _HAS_CHILDREN_FILES else _children()
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for child in _children_of(parent) if tree is None else tree.get(parent, []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal ``pid`` and all its descendants at once (collected first, so none escapes by reparenting)."""
    pids = [pid, *descendants(pid)]
    for target in pids:
        try:
            os.kill(target, sig)
        except ProcessLookupError:
            pass
    return pids


def freeze_tree(pid: int, timeout: float = 10.0) -> list[int]:
    """SIGSTOP ``pid`` and all its descendants, until no new one appears, then wait until each one is stopped or dead.

    A stopped process runs no further instruction: what it has done so far is all it does before a SIGKILL.
    Returns every PID signalled, for the kill."""
    frozen: list[int] = []
    todo = [pid]
    while todo:
        for target in todo:
            frozen.append(target)
            try:
                os.kill(target, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        # A process forked before its parent stopped shows up now.
        todo = [child for child in descendants(pid) if child not in frozen]
    deadline = time.monotonic() + timeout
    # SIGSTOP takes effect when a process leaves the kernel: one in an uninterruptible wait finishes it first.
    while time.monotonic() < deadline and any(state(p) not in STOPPED_STATES | DEAD_STATES | {None} for p in frozen):
        time.sleep(0.001)
    return frozen
