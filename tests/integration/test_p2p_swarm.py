"""A real swarm on a site: node1 stages (the torrent made by p2p_torrent, opentracker, nginx as web seed), node2 to
node4 download with p2p_peer through Ansible, seed until the whole batch is done, and are stopped, in one playbook.

Asserted from outside: what node1's link sent (ip -s link) and what nginx logged are at most 2 copies of the model,
every node's files have the manifest's sha256, the tracker counted every node as a seeder and as a completed
download, and no aria2c, opentracker or nginx is left running.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.fleet import new_state_dir, sandbox
from support.fleet.site import Site
from support.module_process import run_module
from support.playbook import ANSIBLE_PLAYBOOK, ansible_env
from support.swarm import Tracker, WebSeed, aria2_processes

WAN, LAN = 20 << 20, 16 << 20
NODES = [2, 3, 4]
EXPORT = Path("srv/modelseed/export")
TORRENT = "/srv/modelseed/export/models.torrent"
INCOMING = "/var/cache/modelscope/.incoming"
PEER_STATE = "/var/tmp/modelseed-p2p"  # /var/lib is the host's, read-only, on a test node
SHARD = 16 << 20
TESTS = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap") or not os.path.exists(sandbox.SSHD) or not shutil.which("tc")
                       or not shutil.which("aria2c") or not shutil.which("opentracker") or not shutil.which("nginx"),
                       reason="the swarm needs root, bubblewrap, openssh-server, iproute2, aria2, opentracker and nginx"),
]


def export_tree(root: Path) -> dict:
    """A model tree with a hidden file, an empty one and a subdirectory, and its manifest (every file's sha256)."""
    tree = root / EXPORT / "models"
    model = tree / "Qwen" / "swarm-test"
    (model / "tokenizer").mkdir(parents=True)
    for index in range(3):
        (model / f"model-{index + 1:05d}-of-00003.safetensors").write_bytes(os.urandom(SHARD))
    (model / "config.json").write_text('{"model_type": "swarm-test"}')
    (model / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (model / "tokenizer" / "__init__.py").write_bytes(b"")
    files = [{"path": str(p.relative_to(tree)), "size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
             for p in sorted(tree.rglob("*")) if p.is_file()]
    (tree / "manifest.json").write_text(json.dumps({"files": files}, indent=1))
    return {"files": files, "bytes": sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())}


def play(site: Site, tmp_path: Path, name: str, plays: list[dict]) -> None:
    playbook = tmp_path / f"{name}.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    proc = subprocess.run([*site.fleet.command_prefix, ANSIBLE_PLAYBOOK, "-i", str(site.fleet.inventory_path), str(playbook),
                           "--forks", str(len(NODES) + 1)], env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default"),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_three_nodes_fill_from_each_other_and_leave_nothing_running(tmp_path: Path):
    groups = {"modelscope_staging": [1], "modelscope_nodes": NODES}
    with Site(new_state_dir("swarm-"), 1 + len(NODES), wan=WAN, lan=LAN, groups=groups) as site:
        staging = site.fleet.node(1)
        prefix = ["nsenter", f"--net=/run/netns/{site.fleet.gap.node(1)}"]
        manifest = export_tree(staging.path)
        tracker = Tracker(prefix, staging.address, staging.path / "srv/modelseed/opentracker")
        # The web seed gives each connection an eighth of a link: enough that the swarm never starves, little enough that
        # the nodes fetch most pieces from each other.
        web_seed = WebSeed(prefix, staging.address, staging.path / EXPORT, staging.path / "srv/modelseed/nginx", limit_rate=LAN // 8)
        try:
            tracker.start()
            web_seed.start()
            # The torrent is where the swarm starts from: made on node1's tree by a module process, not over ssh.
            made = run_module("p2p_torrent", {
                "path": str(staging.path / EXPORT / "models"), "dest": str(staging.path / TORRENT.lstrip("/")),
                "tracker": tracker.announce, "web_seeds": [web_seed.url], "whitelist": str(tracker.whitelist)}, tmp_path)
            assert not made.get("failed"), made
            info_hash = made["info_hash"]
            tracker.reload(info_hash)
            sent_before = {name: site.sent(name) for name in site.links}

            peer = {"torrent": f"{INCOMING}/models.torrent", "state_dir": PEER_STATE}
            seen_file = tmp_path / "seen.json"
            # One playbook: the nodes join as the node role does (the torrent fetched, the peer started and its download
            # waited for, in one call); while all of them seed, the tracker's counts are read (from node1's namespace,
            # which may read its stats); then the nodes stop seeding.
            play(site, tmp_path, "swarm", [
                {"hosts": "modelscope_nodes", "gather_facts": False, "tasks": [
                    {"name": "Fetch the torrent, join the swarm and wait for the tree", "modelseed.fleet.p2p_peer": {
                        **peer, "url": f"{web_seed.url}models.torrent", "dest": INCOMING, "address": "{{ ansible_host }}", "wait": True,
                        "timeout": 240}}]},
                {"hosts": "localhost", "gather_facts": False, "tasks": [
                    {"name": "Wait until the tracker counts every node as a seeder and a completed download", "ansible.builtin.command": {
                        "argv": [*prefix, sys.executable, "-m", "support.swarm", "scrape", "--announce", tracker.announce, "--info-hash", info_hash,
                                 "--wait", f"complete={len(NODES)}", f"downloaded={len(NODES)}", "--out", str(seen_file)]},
                     "environment": {"PYTHONPATH": str(TESTS)}}]},
                {"hosts": "modelscope_nodes", "gather_facts": False, "tasks": [
                    {"name": "Stop seeding", "modelseed.fleet.p2p_peer": {**peer, "state": "stopped"}}]}])
            seen = json.loads(seen_file.read_text())
            sent = {name: site.sent(name) - before for name, before in sent_before.items()}
            left = tracker.wait_for(info_hash, complete=0, incomplete=0)
        finally:
            web_seed.stop()
            tracker.stop()

        model_bytes = manifest["bytes"]
        served = web_seed.served()
        copies = {name: round(count / model_bytes, 2) for name, count in sent.items()}
        print(f"copies each link sent: {copies}; nginx served {sum(row[2] for row in served) / model_bytes:.2f}")
        assert sent["node1"] <= 2 * model_bytes, copies
        assert sum(row[2] for row in served) <= 2 * model_bytes, served
        # Three copies arrived and node1 sent at most two: the nodes gave each other the rest.
        assert sum(sent[f"node{index}"] for index in NODES) >= model_bytes, copies
        for index in NODES:
            tree = site.fleet.node(index).path / INCOMING.lstrip("/") / "models"
            for entry in manifest["files"]:
                path = tree / entry["path"]
                assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], path
            assert (tree / "manifest.json").read_bytes() == (staging.path / EXPORT / "models" / "manifest.json").read_bytes()
            assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()) == sorted(
                [e["path"] for e in manifest["files"]] + ["manifest.json"])
        assert seen["complete"] == len(NODES) and seen["downloaded"] == len(NODES), seen
        assert left["complete"] + left["incomplete"] == 0, left  # every peer told the tracker it left
        assert aria2_processes(f"{PEER_STATE}/{info_hash}") == []
        assert tracker.proc.poll() is not None and web_seed.proc.poll() is not None
