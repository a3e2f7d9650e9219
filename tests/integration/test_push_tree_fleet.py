"""push on the real-sshd fleet: the node stores no tar and writes each byte once, a killed push resumes without sending
again what the node already holds, and a replacement fits a file system the size of the new model, the old one and one
file in flight.

The node logs in as the non-root operator and becomes root with sudo; the controller pushes (rsync through
``sudo -n -u root rsync`` on the node). The node's cache is a tmpfs of its own, mounted inside the node.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from integration.test_bundle_signing import model_signing_verify

from support.fleet import Fleet, login, new_state_dir, sandbox
from support.module_process import run_modules
from support.playbook import ANSIBLE_PLAYBOOK, ansible_env
from support.recorded_cache import seed
from support.signing import ec_key, ssh_key
from support.smallfs import mount_in_node

MIB = 1 << 20
# a.bin is small, so the slow push (512 KiB/s) delivers it in half a second and is killed in the two seconds b.bin takes.
V1 = {"a.bin": b"1" * (MIB // 4), "b.bin": b"2" * MIB, "c.bin": b"3" * 2 * MIB, "config.json": b"{}"}
V2 = {"a.bin": b"4" * (MIB // 4), "b.bin": b"5" * MIB, "c.bin": b"6" * 2 * MIB, "config.json": b'{"v": 2}'}
TREE = "o--m--master"
CACHE = "/var/cache/modelscope"
# Records, SDK metadata, the manifest and directories: a few pages each.
SLACK = 64 * 4096

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap") or not os.path.exists(sandbox.SSHD)
                       or not shutil.which("rsync") or not os.path.exists(sandbox.SUDO) or not shutil.which("nsenter"),
                       reason="the fleet needs root, bubblewrap, openssh-server, rsync, sudo and nsenter"),
]


def bundles_and_v1(tmp_path: Path, cache: Path) -> dict[str, Path]:
    """Tree-form bundles of model o/m at two commits, written by cache_bundle from recorded caches, v2 signed with its
    model-signing signature; v1 installed into ``cache`` (the node's, seen from here) as a node would have it. Where the
    test starts from: module processes, not a playbook."""
    tasks, dests = [], {}
    for name, files, commit in (("v1", V1, "a" * 40), ("v2", V2, "b" * 40)):
        seed(tmp_path / f"cache-{name}", "models/o/m", files, commit=commit)
        dests[name] = tmp_path / f"bundle-{name}"
        tasks.append({"modelseed.fleet.cache_bundle": {"cache_dir": str(tmp_path / f"cache-{name}"), "dest": str(dests[name]),
                                                       "format": "tree"}})
    tasks.append({"modelseed.fleet.bundle_sign": {"path": str(dests["v2"]), "key": str(ssh_key(tmp_path / "keys/release")),
                                                  "model_signing_key": str(ec_key(tmp_path / "keys/model-signing.pem"))}})
    tasks.append({"modelseed.fleet.cache_install": {"src": str(dests["v1"]), "cache_dir": str(cache), "layout": "all"}})
    made = run_modules(tasks, tmp_path)
    assert not any(r.get("failed") for r in made), [r.get("msg") for r in made]
    return dests


def playbook(tmp_path: Path) -> Path:
    play = [{"hosts": "modelscope_nodes", "gather_facts": False, "roles": ["modelseed.fleet.node"]}]
    path = tmp_path / "push.yml"
    path.write_text(yaml.safe_dump(play))
    return path


def push(fleet: Fleet, play: Path, bundle: Path, *options: str, wait: bool = True):
    extra = {"node_models": [{"name": "o/m"}], "node_cache_dir": CACHE, "node_transport": "push", "node_layout": "all",
             "node_push_source_host": "localhost", "node_push_source_dir": str(bundle), "node_sdk_pythons": []}
    cmd = [*fleet.command_prefix, ANSIBLE_PLAYBOOK, "-i", str(fleet.inventory_path), str(play), "--tags", "install",
           "-e", yaml.safe_dump(extra, default_flow_style=True).strip(), *options]
    proc = subprocess.Popen(cmd, env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    if not wait:
        return proc
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-20000:]
    return out


def wait_for(path: Path, size: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if path.exists() and path.stat().st_size == size:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {size} bytes (push exited {proc.poll()})")


def test_push_writes_once_resumes_and_fits_new_plus_old_plus_one_file(tmp_path):
    play = playbook(tmp_path)
    total = {name: sum(len(d) for d in files.values()) for name, files in (("v1", V1), ("v2", V2))}
    size = total["v2"] + total["v1"] + max(len(d) for d in V2.values()) + SLACK
    # A tar stored on the node and extracted from would need room for the new model twice besides the old one.
    assert size < total["v1"] + 2 * total["v2"]
    with Fleet(new_state_dir("push-"), 1, groups={"modelscope_nodes": [1]}, user=login.OPERATOR) as fleet:
        node = fleet.node(1)
        cache = mount_in_node(node.pid, CACHE, size)
        model = cache / "models/o/m"
        dests = bundles_and_v1(tmp_path, cache)
        assert (model / "c.bin").read_bytes() == V1["c.bin"]

        # v2, slowly, killed (the play, rsync with it) once a.bin has arrived whole.
        incoming = cache / ".modelseed/push" / TREE
        slow = push(fleet, play, dests["v2"], "-e", '{"node_push_rsync_options": ["--bwlimit=512"]}', wait=False)
        try:
            wait_for(incoming / "a.bin", len(V2["a.bin"]), slow)
        finally:
            os.killpg(slow.pid, signal.SIGKILL)
            slow.communicate()
        delivered = (incoming / "a.bin").stat().st_ino
        assert (model / "c.bin").read_bytes() == V1["c.bin"]  # the cache still holds v1, whole

        out = push(fleet, play, dests["v2"], "-v")
        # a.bin was not sent again: the cache holds the very file the killed push delivered.
        assert (model / "a.bin").stat().st_ino == delivered
        assert ">f" not in "".join(line for line in out.splitlines() if "a.bin" in line), out[-5000:]
        for path, data in V2.items():
            assert hashlib.sha256((model / path).read_bytes()).digest() == hashlib.sha256(data).digest(), path
        assert not (cache / ".modelseed/push").exists()
        assert not list(cache.rglob("*.tar")) and not list((node.path / "var/cache").rglob("*.tar"))
        # The signatures came with the manifest: the model's model-signing one is beside the installed model, where the
        # real verifier accepts the directory.
        assert sorted(p.name for p in (node.path / "var/cache/modelseed-bundle").iterdir()) == [
            "SHA256SUMS", "manifest.json", "manifest.json.sig", "o--m--master.sig"]
        model_sig = (dests["v2"] / "o--m--master.sig").read_bytes()
        assert (cache / "models/o/m.sig").read_bytes() == model_sig
        verified = model_signing_verify(model, tmp_path / "keys/model-signing.pub")
        assert verified.returncode == 0 and "Verification succeeded" in verified.stdout, verified

        # A node whose model lost its signature gets it back from the next push, and no model file travels; this push
        # leaves the cipher to ssh's defaults. It is told what the top of the source's bundle holds (as seed_models.yml
        # tells it what the staging role built), which the node holds already: the manifest does not travel again.
        (cache / "models/o/m.sig").unlink()
        top = {"host": "localhost", "dir": str(dests["v2"]),
               "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in dests["v2"].iterdir() if p.is_file()}}
        assert sorted(top["files"]) == ["SHA256SUMS", "manifest.json", "manifest.json.sig", "o--m--master.sig"]
        options = yaml.safe_dump({"node_push_ssh_ciphers": "", "node_push_source_files": top}, default_flow_style=True).strip()
        again = push(fleet, play, dests["v2"], "-v", "-e", options)
        assert re.search(r"TASK \[[^]]*Push the manifest and the signatures\] \**\nskipping: \[node1\]", again), again[-5000:]
        assert (cache / "models/o/m.sig").read_bytes() == model_sig
        assert "o/m@master (model-signing signature missing)" in again, again[-5000:]
        assert TREE + "/" not in again and (model / "a.bin").stat().st_ino == delivered, again[-5000:]
