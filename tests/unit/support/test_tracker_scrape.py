"""support.swarm.Tracker.scrape finds a torrent whose info hash holds the bytes that query strings treat specially."""

from __future__ import annotations

import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

from support.swarm import Tracker


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_hash_with_a_space_and_a_plus_is_scraped(tmp_path: Path):
    info_hash = (b" +%&=" + bytes(range(15))).hex()
    tracker = Tracker([], "127.0.0.1", tmp_path / "tracker", port=free_port()).start()
    try:
        tracker.whitelist.write_text(info_hash + "\n")
        tracker.reload()
        query = urllib.parse.urlencode({"peer_id": "-AR1370-abcdefghijkl", "port": 6881, "uploaded": 0, "downloaded": 0,
                                        "left": 0, "event": "started", "compact": 1})
        announce = f"{tracker.announce}?info_hash={urllib.parse.quote_from_bytes(bytes.fromhex(info_hash), safe='')}&{query}"
        # The whitelist is read again by a thread of its own: announce until the tracker takes the torrent.
        counts = {}
        for _attempt in range(50):
            if b"failure reason" not in urllib.request.urlopen(announce, timeout=5).read():
                counts = tracker.scrape(info_hash)
                break
            time.sleep(0.1)
        assert counts == {"complete": 1, "downloaded": 0, "incomplete": 0}
    finally:
        tracker.stop()
