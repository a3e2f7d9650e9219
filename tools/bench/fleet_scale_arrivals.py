"""When each node of a run came to hold the model where its SDK finds it, seen from outside the nodes.

A node has the model when every weight shard is at its full size in the node's cache outside the dot-directories
in which downloads and installs stage files (the SDK's ``._____temp``, the collection's ``.modelseed/``): whatever
moves a file there has verified it. Watching the trees, not the play, keeps this the same for every way of
seeding, however a transport is built."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleet_setup import shard_bytes

POLL = 0.1  # seconds between two looks at the trees still waiting


@dataclass
class Arrivals:
    """``trees``: each node's cache directory on the host side; ``seen``: time.monotonic() of each arrival."""
    trees: dict[str, Path]
    model: str
    shards: int
    seen: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Arrivals:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._look()  # a node that finished within the last interval

    def _look(self) -> None:
        for name, tree in self.trees.items():
            try:
                arrived = name not in self.seen and shard_bytes(tree, self.model, placed=True) == self.shards
            except OSError:  # a file renamed or removed during the walk: the next look sees where it went
                continue
            if arrived:
                self.seen[name] = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._look()
            self._stop.wait(POLL)
