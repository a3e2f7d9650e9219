"""support.processes.descendants: the whole tree below a process, also what its other threads started."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from support.processes import _children, descendants, kill_tree


def scanned(pid: int) -> list[int]:
    """The descendants of ``pid`` from the stat of every process on the machine."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_descendants_are_children_grandchildren_and_what_other_threads_started():
    started: list[subprocess.Popen] = []
    # Each shell starts two sleeps of its own; one shell is started from another thread than this one.
    command = ["sh", "-c", "sleep 30 & sleep 30 & wait"]
    started.append(subprocess.Popen(command))
    thread = threading.Thread(target=lambda: started.append(subprocess.Popen(command)))
    thread.start()
    thread.join()
    try:
        shells = {proc.pid for proc in started}
        deadline = time.monotonic() + 10
        while len(descendants(os.getpid())) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        found = descendants(os.getpid())
        assert shells <= set(found) and len(found) >= 6, found
        assert sorted(found) == sorted(scanned(os.getpid()))
    finally:
        for proc in started:
            kill_tree(proc.pid)
            proc.wait()
