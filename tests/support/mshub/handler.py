"""HTTP side of the hub: routes, authentication, file bodies and injected faults."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, unquote, urlsplit

from . import api
from .faults import REQUEST_ACTIONS, Fault
from .log import Request
from .replies import FaultyReplies
from .repos import push_commit
from .store import Repo, RepoFile


class Handler(FaultyReplies):
    server_version = "mshub"

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
        if fault is not None and fault.action == "push":
            push_commit(self.server.hub.store.root, fault.model, fault.files)
            return True
        return super()._apply_fault(fault)

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
            if self.fault is not None:  # a body fault is for the body, which the redirected request fetches
                hub.faults.spare(self.fault)
                self.fault = None
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


def _same(secret: str, expected: str) -> bool:
    return hmac.compare_digest(secret.encode("utf-8", "surrogateescape"), expected.encode())
