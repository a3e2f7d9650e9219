"""p2p_torrent: the torrent of an exported tree, made with torf, read back by torf and by aria2c."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torf

from ansible_collections.modelseed.fleet.plugins.modules import p2p_torrent

MODULE = Path(p2p_torrent.__file__)
TRACKER = "http://10.213.0.1:6969/announce"
WEB_SEED = "http://10.213.0.1:8080/export/"


def run(args: dict, tmp_path: Path, check_mode: bool = False) -> dict:
    """The module as Ansible runs it on the staging host: its arguments in a JSON file."""
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}))
    proc = subprocess.run([sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    return json.loads(proc.stdout)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A model tree as the staging host exports it: shards, a hidden file, an empty file, a subdirectory, a manifest."""
    root = tmp_path / "export" / "models"
    (root / "Qwen" / "tiny" / "sub").mkdir(parents=True)
    (root / "Qwen" / "tiny" / "model.safetensors").write_bytes(os.urandom(700_000))
    (root / "Qwen" / "tiny" / "config.json").write_text('{"model_type": "tiny"}')
    (root / "Qwen" / "tiny" / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (root / "Qwen" / "tiny" / "sub" / "__init__.py").write_bytes(b"")
    (root / "manifest.json").write_text('{"files": ["every file with its sha256"]}')
    return root


def args_for(tree: Path, tmp_path: Path, **extra) -> dict:
    return {"path": str(tree), "dest": str(tmp_path / "models.torrent"), "tracker": TRACKER, "web_seeds": [WEB_SEED],
            "whitelist": str(tmp_path / "whitelist"), **extra}


def test_piece_size_gives_about_a_thousand_pieces_within_bounds():
    assert p2p_torrent.piece_size_for(1) == 256 << 10
    assert p2p_torrent.piece_size_for(256 << 20) == 512 << 10
    assert p2p_torrent.piece_size_for(1 << 30) == 2 << 20
    assert p2p_torrent.piece_size_for(10 << 30) == 16 << 20
    assert p2p_torrent.piece_size_for(1 << 40) == 16 << 20


def test_every_file_hidden_and_empty_ones_too_private_with_tracker_and_web_seed(tree: Path, tmp_path: Path):
    result = run(args_for(tree, tmp_path), tmp_path)
    assert result["changed"], result
    torrent = torf.Torrent.read(tmp_path / "models.torrent")
    assert torrent.name == "models"
    assert sorted(str(f) for f in torrent.files) == [
        "models/Qwen/tiny/.gitattributes", "models/Qwen/tiny/config.json", "models/Qwen/tiny/model.safetensors",
        "models/Qwen/tiny/sub/__init__.py", "models/manifest.json"]
    assert torrent.private is True
    assert list(torrent.trackers.flat) == [TRACKER]
    assert list(torrent.webseeds) == [WEB_SEED]
    assert torrent.piece_size == 256 << 10
    assert torrent.verify(str(tree)) is True  # the piece hashes are those of the files' bytes
    assert result["info_hash"] == torrent.infohash.lower()
    assert (result["files"], result["bytes"]) == (5, sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()))
    assert (tmp_path / "whitelist").read_text() == result["info_hash"] + "\n"


@pytest.mark.skipif(not shutil.which("aria2c"), reason="aria2c (the Debian package aria2) is missing")
def test_aria2_reads_the_same_info_hash_and_files(tree: Path, tmp_path: Path):
    result = run(args_for(tree, tmp_path, piece_size=32 << 10), tmp_path)
    shown = subprocess.run(["aria2c", "--show-files=true", str(tmp_path / "models.torrent")], capture_output=True, text=True,
                           check=True).stdout
    assert f"Info Hash: {result['info_hash']}" in shown
    assert "Piece Length: 32KiB" in shown
    assert "./models/Qwen/tiny/.gitattributes" in shown
    assert WEB_SEED in shown


def test_second_run_hashes_nothing_and_changes_nothing(tree: Path, tmp_path: Path):
    first = run(args_for(tree, tmp_path), tmp_path)
    made = (tmp_path / "models.torrent").stat().st_mtime_ns
    second = run(args_for(tree, tmp_path), tmp_path)
    assert not second["changed"], second
    assert second["info_hash"] == first["info_hash"]
    assert (tmp_path / "models.torrent").stat().st_mtime_ns == made
    assert (tmp_path / "whitelist").read_text() == first["info_hash"] + "\n"


def test_a_new_manifest_makes_a_new_torrent_and_the_whitelist_keeps_both(tree: Path, tmp_path: Path):
    first = run(args_for(tree, tmp_path), tmp_path)
    (tree / "Qwen" / "tiny" / "model.safetensors").write_bytes(os.urandom(700_000))
    (tree / "manifest.json").write_text('{"files": ["new sha256"]}')
    second = run(args_for(tree, tmp_path), tmp_path)
    assert second["changed"] and second["info_hash"] != first["info_hash"]
    assert (tmp_path / "whitelist").read_text().split() == [first["info_hash"], second["info_hash"]]
    assert torf.Torrent.read(tmp_path / "models.torrent").verify(str(tree)) is True


def test_a_bundle_signed_again_with_sizes_kept_makes_a_new_torrent(tree: Path, tmp_path: Path):
    (tree / "manifest.json.sig").write_bytes(b"a" * 300)
    first = run(args_for(tree, tmp_path), tmp_path)
    (tree / "manifest.json.sig").write_bytes(b"b" * 300)  # another key's signature of the same manifest, of the same size
    second = run(args_for(tree, tmp_path), tmp_path)
    assert second["changed"] and second["info_hash"] != first["info_hash"]
    assert torf.Torrent.read(tmp_path / "models.torrent").verify(str(tree)) is True
    assert not run(args_for(tree, tmp_path), tmp_path)["changed"]


def test_the_peers_torrent_joins_the_same_swarm_without_web_seeds_and_follows_the_tree(tree: Path, tmp_path: Path):
    peers = tmp_path / "models-peers.torrent"
    first = run(args_for(tree, tmp_path, peers_dest=str(peers)), tmp_path)
    assert first["changed"], first
    plain, full = torf.Torrent.read(peers), torf.Torrent.read(tmp_path / "models.torrent")
    assert plain.infohash.lower() == full.infohash.lower() == first["info_hash"]
    assert list(plain.webseeds) == [] and list(full.webseeds) == [WEB_SEED]
    assert list(plain.trackers.flat) == [TRACKER] and plain.private is True and plain.verify(str(tree)) is True
    assert oct(peers.stat().st_mode & 0o777) == "0o644"
    # Again: nothing to do; the peers' torrent alone gone: only it is written again, and check mode says so first.
    assert not run(args_for(tree, tmp_path, peers_dest=str(peers)), tmp_path)["changed"]
    written = peers.read_bytes()
    peers.unlink()
    assert run(args_for(tree, tmp_path, peers_dest=str(peers)), tmp_path, check_mode=True)["changed"] and not peers.exists()
    again = run(args_for(tree, tmp_path, peers_dest=str(peers)), tmp_path)
    assert again["changed"] and peers.read_bytes() == written
    # A new tree: both torrents follow it, still one swarm.
    (tree / "manifest.json").write_text('{"files": ["new sha256"]}')
    new = run(args_for(tree, tmp_path, peers_dest=str(peers)), tmp_path)
    assert new["info_hash"] != first["info_hash"] and torf.Torrent.read(peers).infohash.lower() == new["info_hash"]


def test_check_mode_writes_nothing(tree: Path, tmp_path: Path):
    result = run(args_for(tree, tmp_path, peers_dest=str(tmp_path / "models-peers.torrent")), tmp_path, check_mode=True)
    assert result["changed"]
    assert not (tmp_path / "models.torrent").exists() and not (tmp_path / "whitelist").exists()
    assert not (tmp_path / "models-peers.torrent").exists()


def test_a_link_in_the_tree_is_refused(tree: Path, tmp_path: Path):
    (tree / "Qwen" / "tiny" / "weights.bin").symlink_to("model.safetensors")
    result = run(args_for(tree, tmp_path), tmp_path)
    assert result["failed"] and "weights.bin is not a regular file" in result["msg"]
    assert not (tmp_path / "models.torrent").exists()


def test_a_piece_size_that_is_no_power_of_two_is_refused(tree: Path, tmp_path: Path):
    result = run(args_for(tree, tmp_path, piece_size=300_000), tmp_path)
    assert result["failed"] and "power of two" in result["msg"]
