"""The hub as an object: start it in a background thread, point an SDK at it, read its log, stop it."""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

from .faults import Faults
from .handler import Handler
from .log import RequestLog
from .store import RepoFile, Store

DEFAULT_REDIRECT_THRESHOLD = 1 << 20
URL_LIFETIME = 3600


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: MsHub

    def handle_error(self, request, client_address) -> None:
        # Clients that give up mid-transfer or reject the certificate are part of the tests.
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)


class MsHub:
    """A ModelScope-compatible hub serving the repositories under ``root``.

    ``token``: API calls then need ``Authorization: Bearer <token>`` or cookie ``m_session_id``.
    ``tls``: (certificate, key) paths; SDKs up to 1.37 only speak https.
    ``redirect_threshold``: files larger than this are redirected to unauthenticated, signed
    object-storage URLs on the same server, as the real hub does with LFS files; None never redirects.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        tls: tuple[Path | str, Path | str] | None = None,
        redirect_threshold: int | None = DEFAULT_REDIRECT_THRESHOLD,
        log_file: Path | str | None = None,
        object_host: str | None = None,
    ) -> None:
        self.store = Store(root)
        self.object_host = object_host  # another name for this server: redirects then leave the hub's origin
        self.host, self._port = host, port
        self.token = token
        self.tls = tls
        self.redirect_threshold = redirect_threshold
        self.lfs_threshold = redirect_threshold if redirect_threshold is not None else DEFAULT_REDIRECT_THRESHOLD
        self.log = RequestLog(log_file)
        self.faults = Faults()
        self._secret = os.urandom(16)
        self._objects: dict[str, Path] = {}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> MsHub:
        httpd = _Server((self.host, self._port), Handler)
        httpd.hub = self
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, self.tls))
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="mshub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = self._thread = None

    def __enter__(self) -> MsHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def domain(self) -> str:
        """host:port, the form of MODELSCOPE_DOMAIN (SDKs up to 1.37 put https:// in front)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The endpoint, the form of MODELSCOPE_ENDPOINT (SDKs from 1.38)."""
        return f"{'https' if self.tls else 'http'}://{self.domain}"

    # -- object storage --------------------------------------------------------------------------

    def _signature(self, sha256: str, model: str, file: str, expires: str) -> str:
        return hmac.new(self._secret, f"{sha256}\n{model}\n{file}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def object_url(self, model: str, item: RepoFile) -> str:
        """A signed URL that serves this file's content without credentials, for an hour."""
        self._objects[item.sha256] = item.local
        expires = str(int(time.time()) + URL_LIFETIME)
        query = {"Model": model, "File": item.path, "Expires": expires, "Signature": self._signature(item.sha256, model, item.path, expires)}
        base = f"{'https' if self.tls else 'http'}://{self.object_host}:{self.port}" if self.object_host else self.url
        return f"{base}/oss/{item.sha256}?{urlencode(query)}"

    def object_path(self, sha256: str, query: dict[str, list[str]]) -> Path | None:
        """The file behind a signed object URL, or None when the URL is forged, expired or unknown."""
        model, file, expires, signature = (query.get(k, [""])[0] for k in ("Model", "File", "Expires", "Signature"))
        if not expires.isdigit() or int(expires) < time.time():
            return None
        if not hmac.compare_digest(signature, self._signature(sha256, model, file, expires)):
            return None
        return self._objects.get(sha256)
