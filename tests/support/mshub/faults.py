"""Faults a test can make the hub commit, like an unstable network or a misbehaving mirror would.

Actions:
  status         answer ``status`` (with ``Retry-After`` if given) instead of the real response
  delay          wait ``delay`` seconds, then answer normally
  reset          send ``after_bytes`` bytes of the body, then reset the connection (TCP RST)
  truncate       announce the full length, send ``after_bytes`` bytes, then close
  empty          answer 200 with an empty body
  wrong_sha      list the file with a wrong Sha256
  redirect_loop  redirect the request to itself
  throttle       send the body at ``rate`` bytes per second (a slow link, to interrupt mid-file); setting the
                 fault's ``rate`` to 0 lets the transfers under way finish at full speed
  push           push a commit of ``files`` to ``model``'s master, then answer normally: the listing and
                 the branch change between two requests of one download
  stall          send ``after_bytes`` bytes of the body, then nothing more on an open connection, until the
                 client gives up (logged as ``given_up``) or ``delay`` seconds (default 300) pass
  reply          answer ``status`` with ``body`` (raw bytes) instead of the real response: a hub that lies
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass

ACTIONS = {"status", "delay", "reset", "truncate", "empty", "wrong_sha", "redirect_loop", "throttle", "push", "stall", "reply"}
LISTING_ACTIONS = {"wrong_sha"}
REQUEST_ACTIONS = ACTIONS - LISTING_ACTIONS


@dataclass
class Fault:
    action: str
    file: str | None = None  # glob on the repository path of the file concerned
    path: str | None = None  # substring of the URL path
    status: int = 503
    retry_after: int | None = None
    after_bytes: int = 0
    delay: float = 0.0
    rate: int = 0  # bytes per second, for throttle
    model: str | None = None  # repository a push goes to
    files: dict | None = None  # what a push changes: {path: bytes, or None to delete}
    body: bytes = b""  # what a reply sends
    times: int | None = None  # how often to strike; None: always
    hits: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {sorted(ACTIONS)}")
        if self.action == "push" and not (self.model and self.files):
            raise ValueError("a push needs model= and files=")

    def matches(self, url_path: str, file: str | None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.path is not None and self.path not in url_path:
            return False
        return self.file is None or (file is not None and fnmatch.fnmatchcase(file, self.file))


class Faults:
    """Rules tried in order; the first that matches strikes and counts one hit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(self, fault: Fault | None = None, **kwargs) -> Fault:
        fault = fault or Fault(**kwargs)
        with self._lock:
            self._rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def strike(self, url_path: str, file: str | None, actions: set[str]) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.action in actions and rule.matches(url_path, file):
                    rule.hits += 1
                    return rule
        return None

    def spare(self, fault: Fault) -> None:
        """Take back one hit: the request it struck carried no body (a redirect), the next one will."""
        with self._lock:
            fault.hits = max(0, fault.hits - 1)
