"""p2p_peer on loopback: a seeder and a downloader of one torrent, opentracker between them.

Check mode, then for real, then each again: started, finished and stopped say what they change and change only
that; a peer reaches its deadline by itself, and cache_install waiting on it fails as the peer's own wait does; a
second download finds the files complete without fetching them; the torrent fetched, the peer started and its
download waited for in one call, and the peer and its files gone in one.

Each call runs as a module process, the way Ansible runs it on a host (its output read until it closes, so a peer
that kept the module's descriptors would hang the call); the deadline test runs as a playbook, whose later tasks read
the first one's result.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.module_process import run_module, run_modules
from support.playbook import run_tasks
from support.swarm import Tracker, aria2_processes

SEEDER, LEECHER = "127.0.0.2", "127.0.0.3"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("aria2c") or not shutil.which("opentracker"), reason="needs aria2 and opentracker"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def swarm(tmp_path: Path):
    """A tree, its torrent (p2p_torrent) and a running tracker; every aria2c started under tmp_path is stopped after."""
    tree = tmp_path / "export" / "models"
    (tree / "sub").mkdir(parents=True)
    (tree / "weights.bin").write_bytes(os.urandom(3 << 20))
    (tree / ".gitattributes").write_text("*.bin filter=lfs\n")
    (tree / "sub" / "empty.txt").write_bytes(b"")
    tracker = Tracker([], "127.0.0.1", tmp_path / "tracker", port=free_port()).start()
    try:
        torrent = {"path": str(tree), "dest": str(tmp_path / "models.torrent"), "tracker": tracker.announce,
                   "whitelist": str(tracker.whitelist), "piece_size": 64 << 10}
        made = run_module("p2p_torrent", torrent, tmp_path)
        assert not made.get("failed"), made
        tracker.reload(made["info_hash"])  # the seeder starts at once
        yield tree, tmp_path / "models.torrent", made["info_hash"], tracker
    finally:
        tracker.stop()
        for pid in aria2_processes(str(tmp_path)):
            os.kill(pid, 9)


def peer(torrent: Path, state_dir: Path, **extra) -> dict:
    return {"modelseed.fleet.p2p_peer": {"torrent": str(torrent), "state_dir": str(state_dir), **extra}}


def checked(task: dict) -> dict:
    return {**task, "check_mode": True}


def test_started_finished_stopped_in_check_mode_and_for_real(swarm, tmp_path: Path):
    tree, torrent, info_hash, tracker = swarm
    seeder_state, state = tmp_path / "seeder-state", tmp_path / "state"
    dest = tmp_path / "incoming"
    seeder = peer(torrent, seeder_state, dest=str(tree.parent), address=SEEDER, port=free_port(), seed=True)
    leecher = peer(torrent, state, dest=str(dest), address=LEECHER, port=free_port())
    assert not run_modules([seeder], tmp_path)[0].get("failed")

    would_start, unfetched = run_modules([checked(leecher), checked(peer(tmp_path / "not-fetched.torrent", state, dest=str(dest),
                                                                         address=LEECHER))], tmp_path)
    assert would_start["changed"] and would_start["pid"] == 0 and not dest.exists(), would_start
    assert unfetched["changed"] and not unfetched.get("failed"), unfetched
    first, second, done = run_modules([leecher, leecher, peer(torrent, state, state="finished", timeout=120)], tmp_path)
    assert first["changed"] and first["pid"] > 0 and first["tree"] == str(dest / "models"), first
    assert not second["changed"] and second["pid"] == first["pid"], second
    assert done["complete"] and done["pid"] == first["pid"], done
    for path in (p for p in tree.rglob("*") if p.is_file()):
        got = dest / "models" / path.relative_to(tree)
        assert hashlib.sha256(got.read_bytes()).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest(), got
    assert tracker.wait_for(info_hash, complete=2, downloaded=1) == {"complete": 2, "downloaded": 1, "incomplete": 0}

    stop = peer(torrent, state, state="stopped")
    would = run_modules([checked(stop)], tmp_path)[0]
    assert would["changed"] and aria2_processes(str(state)) == [first["pid"]], would
    stopped, again = run_modules([stop, stop], tmp_path)
    assert stopped["changed"] and stopped["exit_code"] == 0 and stopped["pid"] == 0, stopped
    assert not again["changed"], again
    assert aria2_processes(str(state)) == []
    assert tracker.wait_for(info_hash, complete=1)["complete"] == 1  # the stopped peer told the tracker it left

    # A second run finds the files complete (a hash check, nothing written) and seeds them again.
    written = {path: path.stat().st_mtime_ns for path in dest.rglob("*") if path.is_file()}
    restarted, finished = run_modules([leecher, peer(torrent, state, state="finished", timeout=60)], tmp_path)
    assert restarted["changed"] and finished["complete"], finished
    assert {path: path.stat().st_mtime_ns for path in dest.rglob("*") if path.is_file()} == written
    assert tracker.wait_for(info_hash, complete=2)["complete"] == 2
    assert not any(r.get("failed") for r in run_modules([stop, peer(torrent, seeder_state, state="stopped")], tmp_path))
    assert aria2_processes(str(tmp_path)) == []


def test_a_peer_stops_by_itself_at_its_deadline(swarm, tmp_path: Path):
    _tree, torrent, info_hash, _tracker = swarm
    state, cache = tmp_path / "state", tmp_path / "cache"
    # Nothing seeds this torrent, so the download cannot complete: the wait ends only when the peer does, by itself.
    # cache_install waiting on the same peer fails as the peer's own wait does, and installs nothing.
    started, waited, install = run_tasks([
        peer(torrent, state, dest=str(tmp_path / "incoming"), address=LEECHER, port=free_port(), deadline=2),
        peer(torrent, state, state="finished", timeout=30),
        {"modelseed.fleet.cache_install": {"src": "{{ step_0.tree }}", "src_files": "link", "cache_dir": str(cache),
                                           "wait_for_peer": "{{ step_0.peer_dir }}", "wait_timeout": 30}}])
    assert started["pid"] > 0 and started["peer_dir"] == str(state / info_hash)
    assert waited["failed"] and "ended before the download was complete" in waited["msg"], waited
    assert install["failed"] and "ended before the download was complete" in install["msg"], install
    assert "nothing was installed" in install["msg"] and not any(cache.rglob("*")), install
    assert aria2_processes(str(state)) == []


@contextlib.contextmanager
def served(directory: Path) -> Iterator[str]:
    """An HTTP server on loopback for the files of ``directory``, as the staging host's nginx serves the torrent."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_join_and_wait_in_one_call_then_absent_removes_the_peer_and_its_files(swarm, tmp_path: Path):
    tree, torrent, info_hash, tracker = swarm
    seeder_state, dest = tmp_path / "seeder-state", tmp_path / "incoming"
    state, fetched = dest / "peers", dest / "models.torrent"
    seeder = peer(torrent, seeder_state, dest=str(tree.parent), address=SEEDER, port=free_port(), seed=True)
    assert not run_modules([seeder], tmp_path)[0].get("failed")
    with served(torrent.parent) as url:
        missing = run_modules([peer(fetched, state, url=f"{url}/nothing.torrent", dest=str(dest), address=LEECHER)], tmp_path)[0]
        assert missing["failed"] and "cannot fetch the torrent from" in missing["msg"] and not fetched.exists(), missing
        joined = run_modules([peer(fetched, state, url=f"{url}/{torrent.name}", dest=str(dest), address=LEECHER, port=free_port(),
                                   wait=True, timeout=120)], tmp_path)[0]
    assert joined["changed"] and joined["complete"] and joined["pid"] > 0 and joined["info_hash"] == info_hash, joined
    assert fetched.read_bytes() == torrent.read_bytes()
    for path in (p for p in tree.rglob("*") if p.is_file()):
        got = Path(joined["tree"]) / path.relative_to(tree)
        assert hashlib.sha256(got.read_bytes()).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest(), got
    assert tracker.wait_for(info_hash, complete=2, downloaded=1) == {"complete": 2, "downloaded": 1, "incomplete": 0}

    absent = peer(fetched, state, state="absent", dest=str(dest))
    would = run_modules([checked(absent)], tmp_path)[0]
    assert would["changed"] and dest.exists() and aria2_processes(str(state)) == [joined["pid"]], would
    gone, again = run_modules([absent, absent], tmp_path)
    assert gone["changed"] and gone["exit_code"] == 0 and not dest.exists(), gone
    assert not again["changed"] and not again.get("failed"), again
    assert aria2_processes(str(state)) == []
    assert tracker.wait_for(info_hash, complete=1)["complete"] == 1  # the peer told the tracker it left
    assert not run_modules([peer(torrent, seeder_state, state="stopped")], tmp_path)[0].get("failed")
