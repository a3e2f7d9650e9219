"""p2p_peer: the aria2c command line of a peer, and the options the installed aria2c accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.modelseed.fleet.plugins.modules import p2p_peer


def argv(**extra) -> list[str]:
    return p2p_peer.aria2_argv("/usr/bin/aria2c", "/in/models.torrent", "/var/cache/modelscope/.incoming", "/run/p2p/abc",
                               "10.0.0.7", 6881, **extra)


def test_a_private_peer_bound_to_its_address_that_seeds_until_stopped():
    args = argv()
    for option in ("--enable-dht=false", "--enable-dht6=false", "--enable-peer-exchange=false", "--bt-enable-lpd=false",
                   "--interface=10.0.0.7", "--listen-port=6881", "--seed-ratio=0.0", "--stop=21600", "--disable-ipv6=true",
                   "--dir=/var/cache/modelscope/.incoming", "--on-bt-download-complete=/run/p2p/abc/on-complete",
                   "--log=/run/p2p/abc/aria2.log", "--check-integrity=true", "--split=1", "--enable-rpc=false"):
        assert option in args
    assert args[0] == "/usr/bin/aria2c" and args[-1] == "/in/models.torrent"
    assert "--bt-seed-unverified=true" not in args


def test_blocks_go_straight_to_the_files_and_the_log_keeps_warnings_only():
    """The cheaper settings a 16-node swarm on two cores showed: no write cache of aria2's own, no per-piece log lines."""
    args = argv()
    assert {"--disk-cache=0", "--log-level=warn", "--file-allocation=none", "--summary-interval=0"} <= set(args)
    assert not any(arg.startswith("--enable-mmap") for arg in args)


def test_a_seeder_serves_its_files_without_hashing_them_and_may_stop_at_a_budget():
    args = argv(seed=True, seed_ratio=1.5, upload_limit=40 << 20)
    assert {"--check-integrity=false", "--bt-seed-unverified=true", "--seed-ratio=1.5", f"--max-overall-upload-limit={40 << 20}"} <= set(args)
    assert "--check-integrity=true" not in args


def test_an_ipv6_address_keeps_ipv6():
    args = p2p_peer.aria2_argv("aria2c", "t.torrent", "/d", "/r", "fd00::7", 6881)
    assert "--interface=fd00::7" in args and "--disable-ipv6=true" not in args


@pytest.mark.skipif(not shutil.which("aria2c"), reason="aria2c (the Debian package aria2) is missing")
def test_the_installed_aria2c_knows_every_option(tmp_path: Path):
    """aria2c refuses an option it does not know before it reads the torrent (exit 28); a missing torrent is exit 1."""
    args = p2p_peer.aria2_argv(shutil.which("aria2c"), str(tmp_path / "missing.torrent"), str(tmp_path), str(tmp_path), "127.0.0.1", 6881,
                               seed=True)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "unrecognized option" not in (proc.stdout + proc.stderr)


def test_the_completion_hook_marks_completion_whatever_the_state_directory_is_called(tmp_path: Path):
    run_dir = tmp_path / "it's a $dir"
    run_dir.mkdir()
    hook = run_dir / "on-complete"
    hook.write_text(p2p_peer.HOOK.format(marker=p2p_peer.shell_quote(str(run_dir / "complete"))))
    subprocess.run(["sh", str(hook), "2089b05ecca3d829", "3", str(tmp_path / "first")], check=True)
    assert (run_dir / "complete").exists() and not (tmp_path / "complete").exists()
