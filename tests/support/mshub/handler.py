"""HTTP side of the hub: routes, authentication, file bodies and injected faults."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import struct
import time
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from . import api
from .faults import REQUEST_ACTIONS, Fault
from .log import Request
from .ranges import UNSATISFIABLE, parse_range
from .store import Repo, RepoFile

CHUNK = 1 << 16
BODY_FAULTS = ("reset", "truncate", "empty", "throttle")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real hub; every reply carries Content-Length
    server_version = "mshub"
    timeout = 60  # drop idle keep-alive connections

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, in the connection's thread, not in the accept loop

    def log_message(self, format, *args) -> None:
        pass  # the request log replaces the stderr lines

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    # -- dispatch --------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.fault: Fault | None = None
        credentials = self._credentials()
        self.rec = Request(self.command, unquote(url.path), url.query, self.headers.get("Range"), bool(credentials), self.client_address[1])
        try:
            self._route(self.rec.path.strip("/").split("/"), credentials)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        finally:
            hub.log.add(self.rec)

    def _route(self, parts: list[str], credentials: list[str]) -> None:
        hub = self.server.hub
        if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[2] == "models" and parts[5:] == ["repo"]:
            self.rec.file = self._arg("FilePath")
        elif parts[0] == "oss" and len(parts) == 2:
            self.rec.model, self.rec.file = self._arg("Model"), self._arg("File")
        if not self._apply_fault(hub.faults.strike(self.rec.path, self.rec.file, REQUEST_ACTIONS)):
            return
        if parts[0] == "oss" and len(parts) == 2:
            return self._oss(parts[1])
        if parts[:2] != ["api", "v1"]:
            return self._error(404, "not found")
        if parts[2:] == ["repos", "internalAccelerationInfo"]:
            return self._error(404, "no acceleration here")
        if parts[2:] == ["login"] and self.command == "POST":
            return self._login()
        if hub.token is not None and not any(_same(c, hub.token) for c in credentials):
            return self._error(401, "authentication required" if not credentials else "invalid token")
        if len(parts) < 5 or parts[2] != "models" or self.command not in ("GET", "HEAD"):
            return self._error(404, f"no such endpoint: {self.rec.path}")
        repo = hub.store.repo(parts[3], parts[4])
        if repo is None:
            return self._error(404, f"model {parts[3]}/{parts[4]} not found")
        self.rec.model = repo.model_id
        routes = {(): self._info, ("revisions",): self._revisions, ("repo", "files"): self._files, ("repo",): self._download}
        route = routes.get(tuple(parts[5:]))
        return route(repo) if route else self._error(404, f"no such endpoint: {self.rec.path}")

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
        elif fault.action == "redirect_loop":
            self._reply(302, headers=[("Location", self.server.hub.url + self.path)])
            return False
        else:
            self.fault = fault
        return True

    # -- endpoints -------------------------------------------------------------------------------

    def _info(self, repo: Repo) -> None:
        self._json(api.model_info(repo))

    def _revisions(self, repo: Repo) -> None:
        end = self._arg("EndTime")
        self._json(api.revision_map(repo, int(end) if end and end.isdigit() else None))

    def _files(self, repo: Repo) -> None:
        hub = self.server.hub
        revision = self._arg("Revision")
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, f"revision {revision} of {repo.model_id} not found")

        def sha_for(item: RepoFile) -> str:
            if hub.faults.strike(self.rec.path, item.path, {"wrong_sha"}):
                return hashlib.sha256(b"wrong " + item.sha256.encode()).hexdigest()
            return item.sha256

        recursive = (self._arg("Recursive") or "false").lower() in ("true", "1")
        entries = api.listing(repo, commit, self._arg("Root") or "", recursive, hub.lfs_threshold, sha_for)
        if entries is None:
            return self._error(404, f"directory {self._arg('Root')} not found")
        self._json({"Files": entries})

    def _download(self, repo: Repo) -> None:
        hub = self.server.hub
        revision = self._arg("Revision")
        tree = repo.tree_of(revision)
        if tree is None:
            return self._error(404, f"revision {revision} of {repo.model_id} not found")
        item = repo.file_at(tree, self.rec.file or "")
        if item is None:
            return self._error(404, f"file {self.rec.file} not found in {repo.model_id}")
        if hub.redirect_threshold is not None and item.size > hub.redirect_threshold:
            return self._reply(302, headers=[("Location", hub.object_url(repo.model_id, item))])
        self._send_file(item.local, item.size, item.sha256)

    def _oss(self, sha256: str) -> None:
        hub = self.server.hub
        local = hub.object_path(sha256, self.query)
        if local is None:
            return self._reply(403, b"<Error><Code>AccessDenied</Code></Error>", ctype="application/xml")
        self._send_file(local, local.stat().st_size, sha256)

    def _login(self) -> None:
        hub = self.server.hub
        try:
            token = json.loads(self.body or b"{}").get("AccessToken") or ""
        except ValueError:
            token = ""
        if hub.token is not None and not _same(str(token), hub.token):
            return self._error(401, "invalid token")
        data = {"AccessToken": token, "Username": "mshub", "Email": "mshub@localhost"}
        self._reply(200, api.envelope(data), headers=[("Set-Cookie", f"m_session_id={token}; Path=/; HttpOnly")])

    # -- replies ---------------------------------------------------------------------------------

    def _arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def _credentials(self) -> list[str]:
        found = []
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            found.append(auth[7:].strip())
        try:
            session = SimpleCookie(self.headers.get("Cookie", "")).get("m_session_id")
        except CookieError:
            session = None
        if session is not None:
            found.append(session.value)
        return found

    def _json(self, data) -> None:
        self._reply(200, api.envelope(data))

    def _error(self, status: int, message: str, headers=()) -> None:
        self._reply(status, api.envelope(None, status, message), headers=headers)

    def _send_file(self, local: Path, size: int, sha256: str) -> None:
        span = parse_range(self.headers.get("Range"), size)
        headers = [("Accept-Ranges", "bytes"), ("ETag", f'"{sha256}"')]
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
        limit = fault.after_bytes if fault and fault.action in ("reset", "truncate") else None
        rate = fault.rate if fault and fault.action == "throttle" else 0
        started = time.monotonic()
        for chunk in _chunks(body, source, limit, CHUNK if not rate else max(1, min(CHUNK, rate // 20))):
            self.wfile.write(chunk)
            self.rec.sent += len(chunk)
            if rate:
                time.sleep(max(0.0, self.rec.sent / rate - (time.monotonic() - started)))
        if limit is not None:
            self._hang_up(reset=fault.action == "reset")

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


def _same(secret: str, expected: str) -> bool:
    return hmac.compare_digest(secret.encode("utf-8", "surrogateescape"), expected.encode())
