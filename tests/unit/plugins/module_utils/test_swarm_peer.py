"""The p2p peer's state directory as p2p_peer and cache_install read it: complete, ended, still running."""

from __future__ import annotations

import threading

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._host.swarm_peer import PeerError, running_pid, wait_complete


def test_a_complete_download_returns_at_once_and_one_completed_meanwhile_is_noticed(tmp_path):
    (tmp_path / "complete").touch()
    wait_complete(str(tmp_path), timeout=0)
    later = tmp_path / "later"
    later.mkdir()
    timer = threading.Timer(0.1, (later / "complete").touch)
    timer.start()
    wait_complete(str(later), timeout=10, interval=0.02)
    timer.join()


def test_a_peer_that_ended_or_never_started_fails_the_wait_with_its_log(tmp_path):
    (tmp_path / "exit").write_text("7\n")
    (tmp_path / "aria2.log").write_text("tracker unreachable\n")
    with pytest.raises(PeerError, match=r"ended before the download was complete \(exit 7\): tracker unreachable"):
        wait_complete(str(tmp_path), timeout=10)
    with pytest.raises(PeerError, match="ended before"):
        wait_complete(str(tmp_path / "no-such-peer"), timeout=10)


def test_a_running_peer_that_does_not_complete_in_time_fails_the_wait(tmp_path):
    with pytest.raises(PeerError, match="not complete after 0 s"):
        wait_complete(str(tmp_path), timeout=0, interval=0.01)
    (tmp_path / "pid").write_text("1\n")  # pid 1 is no aria2c of this directory
    assert running_pid(str(tmp_path)) == 0
