"""A squid caching proxy of the test's own: config, cache_dir, pid file and logs in one directory, stopped by PID.

```python
with Squid(tmp_dir, "10.213.0.1", 3128, clients="10.213.0.0/24", prefix=["nsenter", "--net=/run/netns/x"],
           users={"fleet": "secret"}) as squid:
    ...  # point http_proxy at squid.url("fleet", "secret")
    squid.log()  # one Access per request, in order: client, result (TCP_MISS, TCP_REFRESH_UNMODIFIED, ...), status, URL
```

Never the system's squid: its own config, its own cache, its own port. ``prefix`` runs it elsewhere, in a
network namespace for example. Squid drops root for the user ``proxy`` (Debian's), which owns the directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SQUID = shutil.which("squid") or "/usr/sbin/squid"
NCSA_AUTH = "/usr/lib/squid/basic_ncsa_auth"
USER = "proxy"


def available() -> bool:
    """squid, its basic-auth helper and its user, as Debian's package installs them."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return os.access(SQUID, os.X_OK) and os.access(NCSA_AUTH, os.X_OK) and bool(shutil.which("openssl"))


@dataclass
class Access:
    """One line of access.log (squid's native format)."""

    client: str
    result: str  # TCP_MISS, TCP_HIT, TCP_REFRESH_UNMODIFIED, TCP_DENIED, ...
    status: int
    bytes: int  # sent to the client, headers included
    method: str
    url: str
    user: str

    @property
    def from_cache(self) -> bool:
        """The body came out of squid's cache: a hit, or a hit after the origin said 304 Not Modified."""
        return self.result in ("TCP_HIT", "TCP_MEM_HIT", "TCP_REFRESH_UNMODIFIED", "TCP_INM_HIT", "TCP_IMS_HIT")


class Squid:
    def __init__(self, directory: Path, address: str, port: int, *, clients: str, prefix: list[str] = (),
                 users: dict[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.address, self.port, self.clients = address, port, clients
        self.prefix = list(prefix)
        self.users = dict(users or {})
        self.process: subprocess.Popen | None = None
        self._stderr = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        login = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
        return f"http://{login}{self.address}:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.directory / "access.log"

    @property
    def cache_log(self) -> Path:
        return self.directory / "cache.log"

    def _config(self) -> str:
        auth = []
        if self.users:
            auth = [f"auth_param basic program {NCSA_AUTH} {self.directory / 'passwd'}",
                    "auth_param basic realm modelseed-test",
                    "acl login proxy_auth REQUIRED",
                    "http_access deny !login"]
        return "\n".join([
            f"http_port {self.address}:{self.port}",
            f"acl fleet src {self.clients}",
            "http_access deny !fleet",
            *auth,
            "http_access allow fleet",
            "http_access deny all",
            f"cache_effective_user {USER}",
            f"pid_filename {self.directory / 'squid.pid'}",
            f"cache_dir ufs {self.directory / 'cache'} 64 4 16",
            "cache_mem 8 MB",
            "maximum_object_size 64 MB",
            f"access_log stdio:{self.access_log}",
            f"cache_log {self.cache_log}",
            "cache_store_log none",
            f"coredump_dir {self.directory}",
            "netdb_filename none",
            "pinger_enable off",
            "logfile_rotate 0",
            "shutdown_lifetime 0 seconds",
            "visible_hostname modelseed-test-squid",
            # An object is either wholly cached or fetched as a range: a resume never pulls a whole file.
            "range_offset_limit 0",
            "",
        ])

    def start(self, timeout: float = 20) -> Squid:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "squid.conf").write_text(self._config())
        lines = []
        for user, password in self.users.items():
            hashed = subprocess.run(["openssl", "passwd", "-apr1", "-stdin"], input=password, capture_output=True, text=True,
                                    check=True).stdout.strip()
            lines.append(f"{user}:{hashed}\n")
        (self.directory / "passwd").write_text("".join(lines))
        account = pwd.getpwnam(USER)
        for path in [self.directory, *self.directory.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
        conf = str(self.directory / "squid.conf")
        subprocess.run([*self.prefix, SQUID, "-N", "-z", "-f", conf], capture_output=True, text=True, timeout=60, check=True)
        # -N: one process in the foreground, which is the PID to stop (nsenter execs squid, it does not fork).
        self._stderr = open(self.directory / "stderr.log", "wb")  # noqa: SIM115 - open while squid runs, closed by stop
        self.process = subprocess.Popen([*self.prefix, SQUID, "-N", "-f", conf], stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + timeout
        while "Accepting HTTP Socket connections" not in self._read(self.cache_log):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"squid did not start:\n{self._read(self.cache_log)[-3000:]}"
                                   f"\n{self._read(self.directory / 'stderr.log')[-2000:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def log(self) -> list[Access]:
        """access.log, which squid writes as each request ends (a request still running is not in it yet)."""
        entries = []
        for line in self._read(self.access_log).splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            result, status = fields[3].split("/", 1)
            entries.append(Access(fields[2], result, int(status), int(fields[4]), fields[5], fields[6], fields[7]))
        return entries

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Squid:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
