"""A plain HTTP file server with the hub's fault hooks, for what nodes pull from a URL (bundles).

```python
with FileServer(bundle_dir) as server:
    server.faults.add(action="reset", file="*.tar", after_bytes=1 << 20, times=1)
    ...  # point cache_install at server.url
    server.log.entries()  # every request: path, Range, status, bytes sent
```
"""

from __future__ import annotations

import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from support.mshub.faults import REQUEST_ACTIONS, Faults
from support.mshub.log import Request, RequestLog
from support.mshub.replies import FaultyReplies


class _Handler(FaultyReplies):
    server_version = "fileserver"

    def do_GET(self) -> None:
        root: Path = self.server.root
        path = unquote(urlsplit(self.path).path)
        name = path.lstrip("/")
        self.fault = None
        self.rec = Request(self.command, path, "", self.headers.get("Range"), False, self.client_address[1], file=name)
        try:
            if not self._apply_fault(self.server.faults.strike(path, name, REQUEST_ACTIONS)):
                return
            local = root / name
            if not name or ".." in name.split("/") or not local.is_file():
                return self._error(404, f"{name} not found")
            self._send_file(local, local.stat().st_size, f"{local.stat().st_mtime_ns}")
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            self.server.log.add(self.rec)

    do_HEAD = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # clients giving up are part of the tests
            super().handle_error(request, client_address)


class FileServer:
    """Serves the files directly under ``root`` on 127.0.0.1, with Range and injected faults."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.faults = Faults()
        self.log = RequestLog()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> FileServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.root, httpd.faults, httpd.log = self.root, self.faults, self.log
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="fileserver", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
