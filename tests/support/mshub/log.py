"""What the hub was asked and what it answered; never the credentials themselves."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Request:
    method: str
    path: str  # URL path, percent-decoded
    query: str  # raw query string
    range: str | None  # Range header as sent
    auth: bool  # whether a token or session cookie was presented
    port: int  # client port: tells connections apart
    status: int = 0
    sent: int = 0  # body bytes written
    model: str | None = None
    file: str | None = None  # repository path, for file downloads
    given_up: bool = False  # a stalled reply the client closed (rather than the hub letting go)
    at: float = field(default_factory=time.time)

    @property
    def download(self) -> bool:
        """File content was served (maybe empty): directly or from object storage; redirects are not."""
        return self.file is not None and self.method == "GET" and self.status in (200, 206)


class RequestLog:
    def __init__(self, jsonl: Path | str | None = None) -> None:
        self._lock = threading.Lock()
        self._items: list[Request] = []
        self._jsonl = Path(jsonl) if jsonl else None

    def add(self, item: Request) -> None:
        with self._lock:
            self._items.append(item)
            if self._jsonl:
                with self._jsonl.open("a") as out:
                    out.write(json.dumps(asdict(item), sort_keys=True) + "\n")

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def entries(self, since: int = 0) -> list[Request]:
        """A copy of the requests logged from index ``since`` on (take ``len(log)`` as a mark)."""
        with self._lock:
            return list(self._items[since:])

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def downloads(self, since: int = 0, model: str | None = None) -> Counter:
        """File downloads, counted per repository path."""
        return Counter(r.file for r in self.entries(since) if r.download and model in (None, r.model))

    def bytes_served(self, since: int = 0, model: str | None = None) -> int:
        return sum(r.sent for r in self.entries(since) if r.download and model in (None, r.model))

    def api_calls(self, since: int = 0) -> list[str]:
        """Compact ``METHOD path?query -> status`` lines, for assertions messages and reports."""
        return [f"{r.method} {r.path}{'?' + r.query if r.query else ''} -> {r.status}" for r in self.entries(since)]
