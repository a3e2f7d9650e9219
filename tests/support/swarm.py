"""The staging side of a BitTorrent swarm for tests and benchmarks: opentracker, an nginx web seed, and the p2p
modules run as Ansible runs them, each in a network namespace of a site (``support.fleet.site``) or on loopback.

Every process is started here and stopped here by its pid. ``python -m support.swarm`` serves a playbook: ``wait-piece``
waits until a peer holds a verified piece, and ``scrape`` until the tracker's counts are the ones wanted.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torf

REPO = Path(__file__).resolve().parents[2]
MODULES = REPO / "plugins" / "modules"
TRACKER_PORT = 6969
WEB_SEED_PORT = 8080


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_listening(prefix: list[str], address: str, port: int, timeout: float = 10) -> None:
    """Until something accepts TCP on address:port, seen from the namespace of ``prefix``."""
    probe = f"import socket; socket.create_connection(({address!r}, {port}), 1).close()"
    deadline = time.monotonic() + timeout
    while subprocess.run([*prefix, sys.executable, "-c", probe], capture_output=True, check=False).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {address}:{port}")
        time.sleep(0.1)


def hash_query(info_hash: str) -> str:
    """An info hash (hex) for a query string, every byte percent-encoded: opentracker reads no "+" as a space, so
    urlencode() would miss one hash in 13."""
    return urllib.parse.quote_from_bytes(bytes.fromhex(info_hash), safe="")


@dataclass
class Tracker:
    """opentracker bound to ``address``, answering only the info hashes of its whitelist, stats for ``address``."""
    prefix: list[str]
    address: str
    state_dir: Path
    port: int = TRACKER_PORT
    proc: subprocess.Popen | None = None

    @property
    def whitelist(self) -> Path:
        return self.state_dir / "whitelist"

    @property
    def announce(self) -> str:
        return f"http://{self.address}:{self.port}/announce"

    def start(self) -> Tracker:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        self.whitelist.touch()
        self.whitelist.chmod(0o644)
        conf = self.state_dir / "opentracker.conf"
        conf.write_text(f"access.stats {self.address}\n")
        # -d chroots into the state directory, so the whitelist is named from inside it; -u drops root.
        self.proc = subprocess.Popen([*self.prefix, "opentracker", "-f", str(conf), "-i", self.address, "-p", str(self.port),
                                      "-P", str(self.port), "-d", str(self.state_dir), "-w", "/whitelist", "-u", "nobody"],
                                     stdout=subprocess.DEVNULL, stderr=(self.state_dir / "opentracker.log").open("wb"))
        wait_listening(self.prefix, self.address, self.port)
        return self

    def reload(self, info_hash: str | None = None, timeout: float = 10) -> None:
        """opentracker reads its whitelist again on SIGHUP, in a thread of its own: with ``info_hash``, return only once
        it takes that torrent, so that a peer started right after is not refused."""
        self.proc.send_signal(signal.SIGHUP)
        if info_hash:
            self.wait_taken(info_hash, timeout)

    def wait_taken(self, info_hash: str, timeout: float = 10) -> None:
        """Until the tracker answers announces for ``info_hash`` (it is on the whitelist the tracker read)."""
        deadline = time.monotonic() + timeout
        # A seeder that is not there announces itself and, once taken, leaves at once: the counts are as they were.
        peer = {"peer_id": "-MS0000-reloadcheck0", "port": 1, "uploaded": 0, "downloaded": 0, "left": 0, "compact": 1, "numwant": 0}
        announce = f"/announce?info_hash={hash_query(info_hash)}&"
        while b"failure reason" in self.get(announce + urllib.parse.urlencode({**peer, "event": "started"})):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the tracker does not take {info_hash} after {timeout:.0f} s")
            time.sleep(0.05)
        self.get(announce + urllib.parse.urlencode({**peer, "event": "stopped"}))

    def get(self, path: str) -> bytes:
        """A GET to the tracker from its own namespace (and address, which the stats need)."""
        url = f"http://{self.address}:{self.port}{path}"
        code = f"import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen({url!r}, timeout=5).read())"
        return subprocess.run([*self.prefix, sys.executable, "-c", code], capture_output=True, check=True).stdout

    def scrape(self, info_hash: str) -> dict[str, int]:
        """{'complete', 'incomplete', 'downloaded'} for one torrent: seeders and leechers now, completed events so far."""
        body = self.get("/scrape?info_hash=" + hash_query(info_hash))
        counts = {}
        for key in ("complete", "downloaded", "incomplete"):
            token = f"{len(key)}:{key}i".encode()
            counts[key] = int(body[body.index(token) + len(token):].split(b"e", 1)[0]) if token in body else 0
        return counts

    def wait_for(self, info_hash: str, timeout: float = 60, **wanted: int) -> dict[str, int]:
        """Scrape until the counts include ``wanted`` (for example complete=3) or ``timeout`` passes; the last scrape.
        A peer announces its completion just after its download ends, so the tracker may hear of it a moment later."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.scrape(info_hash)
            if all(counts[key] == value for key, value in wanted.items()) or time.monotonic() > deadline:
                return counts
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user {user};
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    log_format served '$remote_addr $status $body_bytes_sent "$request"';
    access_log {state}/access.log served;
    client_body_temp_path {state}/tmp;
    proxy_temp_path {state}/tmp;
    fastcgi_temp_path {state}/tmp;
    uwsgi_temp_path {state}/tmp;
    scgi_temp_path {state}/tmp;
    server {{
        listen {address}:{port};
        location / {{
            root {root};
            limit_rate {limit_rate};
        }}
    }}
}}
"""


@dataclass
class WebSeed:
    """nginx serving ``root`` at http://address:port/, at most ``limit_rate`` bytes per second per connection (0: none)."""
    prefix: list[str]
    address: str
    root: Path
    state_dir: Path
    limit_rate: int = 0
    port: int = WEB_SEED_PORT
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/"

    def start(self) -> WebSeed:
        (self.state_dir / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.state_dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user="root", state=self.state_dir, address=self.address, port=self.port, root=self.root,
                                          limit_rate=self.limit_rate))
        self.proc = subprocess.Popen([*self.prefix, "nginx", "-p", f"{self.state_dir}/", "-c", str(conf), "-e", str(self.state_dir / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.prefix, self.address, self.port)
        return self

    def served(self) -> list[tuple[str, int, int, str]]:
        """(client, status, body bytes, request line) of every request so far, from the access log."""
        log = self.state_dir / "access.log"
        rows = []
        for line in log.read_text().splitlines() if log.exists() else []:
            client, status, sent, request = line.split(" ", 3)
            rows.append((client, int(status), int(sent), request.strip('"')))
        return rows

    def bytes_served(self) -> int:
        return sum(row[2] for row in self.served())

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc)


@dataclass
class ModuleRunner:
    """Runs a module file of the collection as Ansible runs it on a host (its arguments in a JSON file), in the
    namespace of ``prefix``, with ``python`` (one that can import ansible)."""
    workdir: Path
    python: str = sys.executable
    # Threads start peers at once: next() on a count is atomic, where ``runs += 1`` could give two runs one file.
    runs: itertools.count = field(default_factory=itertools.count)

    def __call__(self, prefix: list[str], name: str, args: dict) -> dict:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args_file = self.workdir / f"{name}-{os.getpid()}-{next(self.runs)}.json"
        args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        env = dict(os.environ, PYTHONPATH=str(REPO / ".build"))
        proc = subprocess.run([*prefix, self.python, str(MODULES / f"{name}.py"), str(args_file)], capture_output=True, text=True,
                              env=env, check=False)
        args_file.unlink()
        text = proc.stdout.strip()
        result = json.loads(text[text.index("{"):]) if "{" in text else {"failed": True, "msg": proc.stderr[-3000:]}
        if result.get("failed"):
            raise RuntimeError(f"{name} {args.get('state', '')} failed: {result.get('msg')}")
        return result


def aria2_processes(marker: str) -> list[int]:
    """Pids of the aria2c processes whose command line mentions ``marker`` (a state directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and os.path.basename(args[0]).startswith(b"aria2c") and any(marker.encode() in arg for arg in args):
                found.append(int(entry.name))
    return found


def stop_aria2(marker: str, timeout: float = 20) -> None:
    """Stop every aria2c whose command line mentions ``marker``: SIGINT (aria2's graceful halt), then SIGKILL."""
    pids = aria2_processes(marker)
    for pid in pids:
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while aria2_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in aria2_processes(marker):
        os.kill(pid, signal.SIGKILL)


def verified_pieces(torrent: Path, dest: Path) -> int:
    """How many pieces of ``torrent`` the files under ``dest`` (a peer's download directory) hold with their right
    SHA-1: what a peer can already give others, read from outside the peer."""
    meta = torf.Torrent.read(str(torrent))
    stream = bytearray()
    verified = index = 0
    for entry in meta.files:
        path = dest / os.fspath(entry)
        data = path.read_bytes()[:entry.size] if path.is_file() else b""
        stream += data.ljust(entry.size, b"\0")
        while len(stream) >= meta.piece_size:
            verified += hashlib.sha1(stream[:meta.piece_size]).digest() == meta.hashes[index]
            del stream[:meta.piece_size]
            index += 1
    if stream:
        verified += hashlib.sha1(stream).digest() == meta.hashes[index]
    return verified


def wait_for_piece(torrent: Path, dest: Path, timeout: float = 60) -> int:
    """Until the peer's files hold a verified piece (then how many), or RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        count = verified_pieces(torrent, dest) if torrent.is_file() else 0
        if count:
            return count
        if time.monotonic() > deadline:
            raise RuntimeError(f"no verified piece in {dest} after {timeout:.0f} s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """For a playbook that must wait on the swarm or look at it; each command prints what it saw.

    python -m support.swarm wait-piece --torrent FILE --dest DIR [--timeout S]: once a peer holds a verified piece, how
    many it holds then. python -m support.swarm scrape --announce URL --info-hash HASH [--wait KEY=N ...] [--timeout S]
    [--out FILE]: the tracker's counts (JSON) once they include every KEY=N, or after the timeout; run it where the
    tracker's stats may be read from."""
    parser = argparse.ArgumentParser(prog="python -m support.swarm")
    commands = parser.add_subparsers(dest="command", required=True)
    piece = commands.add_parser("wait-piece")
    piece.add_argument("--torrent", required=True, type=Path)
    piece.add_argument("--dest", required=True, type=Path)
    piece.add_argument("--timeout", type=float, default=60)
    scrape = commands.add_parser("scrape")
    scrape.add_argument("--announce", required=True)
    scrape.add_argument("--info-hash", required=True)
    scrape.add_argument("--wait", nargs="*", default=[], metavar="KEY=N")
    scrape.add_argument("--timeout", type=float, default=60)
    scrape.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "wait-piece":
        print(wait_for_piece(args.torrent, args.dest, args.timeout))
    else:
        url = urllib.parse.urlsplit(args.announce)
        wanted = {key: int(value) for key, value in (item.split("=", 1) for item in args.wait)}
        counts = json.dumps(Tracker([], url.hostname, Path("."), port=url.port).wait_for(args.info_hash, args.timeout, **wanted))
        if args.out:
            args.out.write_text(counts)
        print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
