"""Sending replies with injected faults: shared by the hub and the plain file server."""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from . import api
from .faults import Fault
from .log import Request
from .ranges import UNSATISFIABLE, parse_range

CHUNK = 1 << 16
BODY_FAULTS = ("reset", "truncate", "empty", "throttle", "stall")
STALL_DEFAULT = 300.0


class FaultyReplies(BaseHTTPRequestHandler):
    """Replies that a matching ``Fault`` can delay, replace, cut short, slow down or redirect in a loop.

    Subclasses set ``self.rec`` (the log entry) and ``self.fault`` (None) before replying.
    """

    protocol_version = "HTTP/1.1"  # keep-alive, as the real hub; every reply carries Content-Length
    timeout = 60  # drop idle keep-alive connections
    # As real servers do: without it a body written after its headers waits for the client's delayed
    # ACK, 40 ms on every request but the first of a kept-alive connection.
    disable_nagle_algorithm = True
    rec: Request
    fault: Fault | None

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, in the connection's thread, not in the accept loop

    def log_message(self, format, *args) -> None:
        pass  # the request log replaces the stderr lines

    def _apply_fault(self, fault: Fault | None) -> bool:
        """False when the fault already answered the request."""
        if fault is None:
            return True
        if fault.action == "delay":
            time.sleep(fault.delay)
        elif fault.action == "status":
            headers = [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
            self._error(fault.status, "injected fault", headers)
            return False
        elif fault.action == "reply":
            self._reply(fault.status, fault.body)
            return False
        elif fault.action == "redirect_loop":
            self._reply(302, headers=[("Location", self.path)])  # relative: the same URL on whatever origin this is
            return False
        else:
            self.fault = fault
        return True

    def _error(self, status: int, message: str, headers=()) -> None:
        self._reply(status, api.envelope(None, status, message), headers=headers)

    def _send_file(self, local: Path, size: int, etag: str) -> None:
        span = parse_range(self.headers.get("Range"), size)
        headers = [("Accept-Ranges", "bytes"), ("ETag", f'"{etag}"')]
        if span == UNSATISFIABLE:
            return self._reply(416, headers=[("Content-Range", f"bytes */{size}")])
        status, (first, last) = (206, span) if span else (200, (0, size - 1))
        if span:
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        self._reply(status, headers=headers, ctype="application/octet-stream", source=(local, first, last - first + 1))

    def _reply(self, status: int, body: bytes = b"", *, headers=(), ctype: str = "application/json", source=None) -> None:
        """Send one response; ``source`` is (path, offset, length) for file bodies."""
        length = source[2] if source else len(body)
        fault = self.fault if self.fault and self.fault.action in BODY_FAULTS else None
        if fault and fault.action == "empty":
            status, length, source, body = 200, 0, None, b""
            headers = [h for h in headers if h[0] != "Content-Range"]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.rec.status = status
        if self.command == "HEAD":
            return
        limit = fault.after_bytes if fault and fault.action in ("reset", "truncate", "stall") else None
        throttled = fault is not None and fault.action == "throttle"
        rate = fault.rate if throttled else 0
        started = time.monotonic()
        for chunk in _chunks(body, source, limit, CHUNK if not rate else max(1, min(CHUNK, rate // 20))):
            self.wfile.write(chunk)
            self.rec.sent += len(chunk)
            rate = fault.rate if throttled else 0  # read again: a test may lift the throttle of a transfer under way
            if rate:
                time.sleep(max(0.0, self.rec.sent / rate - (time.monotonic() - started)))
        if fault and fault.action == "stall":
            self._hold(fault.delay or STALL_DEFAULT)
        if limit is not None:
            self._hang_up(reset=fault.action == "reset")

    def _hold(self, seconds: float) -> None:
        """Keep the connection open and silent until the client closes it or ``seconds`` pass."""
        self.wfile.flush()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _w, _x = select.select([self.connection], [], [], 0.1)
            if ready and not self.connection.recv(1 << 16):
                self.rec.given_up = True
                return

    def _hang_up(self, reset: bool) -> None:
        self.close_connection = True
        if reset:  # linger 0 turns close() into a TCP RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


def _chunks(body: bytes, source, limit: int | None, size: int = CHUNK):
    if source is None:
        yield body[:limit] if limit is not None else body
        return
    path, offset, remaining = source
    if limit is not None:
        remaining = min(remaining, limit)
    with open(path, "rb") as stream:
        stream.seek(offset)
        while remaining > 0:
            chunk = stream.read(min(size, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
