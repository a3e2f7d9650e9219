"""Delta bundles: cache_bundle with base_manifest carries only what changed, cache_install applies it only on its base.

The hub holds the sample model at v1 and at v2, which changes one small file. The staging host downloads both and
writes a full bundle of v1 and deltas of v2 against it (tar and tree form). Nodes that installed the full bundle get
the delta: the real SDKs load the result offline and download nothing online; the unchanged files are the base's
inodes. A signed delta is verified against a trust list as a full bundle is. A cache without the base, or with
another commit at the base's revision, refuses the delta and stays as it was. A run killed just before and just after
the swap leaves the model old or new, and the next run completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from integration.test_bundle_signing import model_signing_verify
from integration.test_p2p_peer import free_port, served

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tar_writer import model_tar_size
from support.bundles import ModelSpec, write_bundle
from support.cache_audit import lying_records
from support.judging import judge
from support.module_process import run_module, run_modules
from support.mshub import MsHub, make_repo, push_commit
from support.playbook import ansible_env, playbook_command
from support.sample_models import MODEL, model_files
from support.signing import allowed_signers, ec_key, ssh_key, ssh_sign
from support.swarm import Tracker, aria2_processes
from support.table_play import Row, table_play

# One worker runs the module: the staging play and the nodes' play are made once, for every test.
pytestmark = [pytest.mark.slow, table_play("delta bundles")]

NEW_CONFIG = b'{"model_type": "qwen2", "rope_theta": 1000000}'
MODELS_DIR = "models/Qwen/Qwen2___5-0___5B-Test"
SNAPSHOTS = "models/Qwen--Qwen2.5-0.5B-Test/snapshots"
WEIGHTS = "weights/model-00001.bin"


def new_files() -> dict[str, bytes]:
    return {**model_files(), "config.json": NEW_CONFIG}


@pytest.fixture(scope="module")
def delta_hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("delta-hub")
    make_repo(root, MODEL, model_files(), tags=["v1"])
    push_commit(root, MODEL, {"config.json": NEW_CONFIG}, tags=["v2"])
    return root


@pytest.fixture(scope="module")
def delta_tls_hub(delta_hub_root, tls):
    with MsHub(delta_hub_root, tls=tls.pair, redirect_threshold=1 << 20) as server:
        yield server


@pytest.fixture(scope="module")
def staged(delta_hub_root, tmp_path_factory):
    """The staging host, as module processes (ansible-playbook's start-up spared): v1 and v2 downloaded, a full
    bundle of v1, deltas of v2 against it, and the tar delta written again (nothing to do)."""
    top = tmp_path_factory.mktemp("delta-staging")
    cache = top / "cache"
    dirs = {name: top / name for name in ("full", "delta-tar", "delta-tree")}
    with MsHub(delta_hub_root, redirect_threshold=1 << 20) as hub:
        def download(revision):
            return {"modelseed.fleet.modelscope_model": {"name": MODEL, "revision": revision, "cache_dir": str(cache),
                                                         "endpoint": hub.url, "layout": "snapshots"}}

        def bundle(dest, revision, **options):
            return {"modelseed.fleet.cache_bundle": {"cache_dir": str(cache), "dest": str(dest),
                                                     "models": [{"name": MODEL, "revision": revision}], **options}}

        base = str(dirs["full"] / "manifest.json")
        results = run_modules([download("v1"), download("v2"), bundle(dirs["full"], "v1"),
                               bundle(dirs["delta-tar"], "v2", base_manifest=base),
                               bundle(dirs["delta-tree"], "v2", base_manifest=base, format="tree"),
                               bundle(dirs["delta-tar"], "v2", base_manifest=base)], top)
    for result in results:
        assert not result.get("failed"), result.get("msg")
    # The tar delta signed where the key is, as bundle_sign does it: nodes verify it as they verify a full bundle.
    key = ssh_key(top / "release")
    manifest_path = dirs["delta-tar"] / "manifest.json"
    (dirs["delta-tar"] / "manifest.json.sig").write_bytes(ssh_sign(key, manifest_path.read_bytes()))
    dirs["allowed_signers"] = allowed_signers(top / "allowed_signers", {"release@example.com": key})
    return dirs, results


def manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def test_delta_carries_only_the_changed_file_and_metadata(staged):
    dirs, results = staged
    model = manifest(dirs["delta-tar"])["models"][0]
    carried = bundle_format.carried_files(model)
    assert [f["path"] for f in carried] == ["config.json"]
    assert sorted(model["base"]["files"]) == sorted(p for p in model_files() if p != "config.json")
    assert model["base"]["revision"] == "v1" and model["base"]["commit"] == manifest(dirs["full"])["models"][0]["commit"]
    assert manifest(dirs["delta-tar"])["base_manifest_sha256"] == hashlib.sha256((dirs["full"] / "manifest.json").read_bytes()).hexdigest()
    # The tar: the changed file and the SDK metadata, each in 512-byte blocks with a header (and a pax header
    # for long names), then the end-of-archive record; nothing of the unchanged files.
    payload = [f["size"] for f in carried] + [m["size"] for m in model["metadata"]]
    bound = sum(-(-size // 512) * 512 + 1536 for size in payload) + 10240
    tar = dirs["delta-tar"] / model["tar"]
    assert tar.stat().st_size == model["tar_size"] <= bound
    whole = {k: v for k, v in model.items() if k != "base"}
    assert model_tar_size(whole) > 100 * model["tar_size"]
    # The tree: exactly the changed file and the metadata.
    tree = dirs["delta-tree"] / bundle_format.tree_dir_name(model)
    found = {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    assert found.keys() == {"config.json", ".msc", ".mdl", ".mv"} and found["config.json"] == NEW_CONFIG
    assert sum(len(data) for data in found.values()) == sum(payload)
    tar_result, again = results[3], results[5]
    assert tar_result["changed"] and "delta against manifest" in tar_result["msg"] and tar_result["models"][0]["from_base"] == 7
    assert again["changed"] is False, again["msg"]


def install(src, cache, **options) -> dict:
    return {"modelseed.fleet.cache_install": {"src": str(src), "cache_dir": str(cache), **options}}


def digest(top: Path) -> dict[str, str]:
    """Every file below ``top`` by content, but the lock files a run takes."""
    return {str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(top.rglob("*"))
            if p.is_file() and ".modelseed/locks" not in str(p)}


# case: (layout of the node, bundle form carried, what the cache holds before: the full v1, nothing, or another v1)
CASES = {
    "all, tar": ("all", "delta-tar", "v1"),
    "snapshots, tree": ("snapshots", "delta-tree", "v1"),
    "all, tar, check mode": ("all", "delta-tar", "v1"),
    "no base": ("models", "delta-tar", None),
    "another commit at v1": ("snapshots", "delta-tar", "other"),
    "all, tar, signed": ("all", "delta-tar", "v1"),
    "all, tree, unsigned": ("all", "delta-tree", "v1"),
}


@pytest.fixture(scope="module")
def applied(staged, tmp_path_factory):
    """The bases installed, every delta case, then some cases again: module processes, as Ansible runs them on a node."""
    dirs, _results = staged
    top = tmp_path_factory.mktemp("delta-nodes")
    other = write_bundle(top / "other", [ModelSpec(MODEL, {"config.json": b"{}"}, revision="v1")])
    caches = {case: top / case.replace(" ", "-").replace(",", "") for case in CASES}
    templates = {}  # one install per (bundle, layout), copied to each case that starts from it
    for case, (layout, _form, base) in CASES.items():
        if not base:
            caches[case].mkdir()
            continue
        if (base, layout) not in templates:
            templates[base, layout] = top / f"template-{base}-{layout}"
            args = {"src": str(dirs["full"] if base == "v1" else other), "cache_dir": str(templates[base, layout]), "layout": layout}
            assert not run_module("cache_install", args, top).get("failed")
        subprocess.run(["cp", "-a", str(templates[base, layout]), str(caches[case])], check=True)
    tasks = {}
    for case, (layout, form, _base) in CASES.items():
        trust = {"trust": {"allowed_signers": str(dirs["allowed_signers"]), "identities": ["release@example.com"]}} if "signed" in case else {}
        tasks[case] = {**install(dirs[form], caches[case], layout=layout, **trust), "check_mode": "check mode" in case, "diff": True}
    before = {case: digest(caches[case]) for case in CASES}
    weights = caches["all, tar"] / MODELS_DIR / WEIGHTS
    inode = weights.stat().st_ino
    # Every case; then the applied ones again (nothing left to do) and a refused one (refused again).
    repeated = ["all, tar", "snapshots, tree", "another commit at v1"]
    results = run_modules(list(tasks.values()), top)
    rows = {case: Row(result, before[case], digest(caches[case])) for case, result in zip(CASES, results, strict=True)}
    again = run_modules([tasks[case] for case in repeated], top)
    # models/ is replaced in place: the unchanged files are the very inodes of v1.
    assert weights.stat().st_ino == inode
    return rows, dict(zip(repeated, again, strict=True)), caches


@pytest.mark.parametrize("case", ["all, tar", "snapshots, tree"])
def test_delta_on_its_base_loads_offline_with_every_sdk(applied, delta_tls_hub, tls, sdk, case):
    rows, again, caches = applied
    row, cache = rows[case], caches[case]
    assert row.result["changed"] and not row.result.get("failed"), row.result["msg"]
    assert "delta on v1 commit" in row.result["msg"] and row.result["bytes_installed"] == len(NEW_CONFIG)
    assert again[case]["changed"] is False, again[case]["msg"]
    assert not lying_records(cache)
    if case.startswith("all"):
        # SDK 1.40.2 judges the snapshots case.
        for version in ("1.15.0", "1.37.1"):
            judge(sdk(version), cache, delta_tls_hub, tls, files=new_files())
        return
    old, new = cache / SNAPSHOTS / "v1", cache / SNAPSHOTS / "v2"
    assert (old / WEIGHTS).stat().st_ino == (new / WEIGHTS).stat().st_ino
    assert (new / "config.json").read_bytes() == NEW_CONFIG and (old / "config.json").read_bytes() == model_files()["config.json"]
    judge(sdk("1.40.2"), cache, delta_tls_hub, tls, files=new_files(), revision="v2")


def test_check_mode_reports_the_delta_and_changes_nothing(applied):
    rows, _again, _caches = applied
    row = rows["all, tar, check mode"]
    assert row.result["changed"] and "would replace 1" in row.result["msg"] and "delta on v1" in row.result["msg"]
    assert "v2 commit" in row.result["diff"]["after"] and "v1 commit" in row.result["diff"]["before"]
    assert row.before == row.after


@pytest.mark.parametrize("case, says", [("no base", "which is not installed in layout models"),
                                        ("another commit at v1", "holds Qwen/Qwen2.5-0.5B-Test@v1 commit")])
def test_delta_on_a_wrong_base_is_refused_and_changes_nothing(applied, case, says):
    rows, again, caches = applied
    row = rows[case]
    assert row.result.get("failed") and "is a delta bundle on Qwen/Qwen2.5-0.5B-Test@v1 commit" in row.result["msg"], row.result["msg"]
    assert says in row.result["msg"] and "nothing was changed" in row.result["msg"]
    assert row.before == row.after
    if case in again:
        assert again[case].get("failed") and "is a delta bundle on" in again[case]["msg"]
    if case == "no base":
        assert not (caches[case] / MODELS_DIR).exists()


def test_a_signed_delta_is_verified_like_a_full_bundle(applied):
    rows, _again, _caches = applied
    signed, unsigned = rows["all, tar, signed"], rows["all, tree, unsigned"]
    assert signed.result["changed"] and signed.result["signer"].startswith("release@example.com (ssh-ed25519 key SHA256:")
    assert "delta on v1" in signed.result["msg"], signed.result["msg"]
    assert unsigned.result.get("failed") and "the bundle is not signed" in unsigned.result["msg"], unsigned.result["msg"]
    assert unsigned.before == unsigned.after


@pytest.mark.skipif(not shutil.which("aria2c") or not shutil.which("opentracker"), reason="needs aria2 and opentracker")
def test_a_tree_delta_carried_by_p2p_installs_on_its_base_with_its_model_signature(staged, applied, tmp_path):
    """The p2p transport's path on loopback: the signed tree delta's torrent (p2p_torrent, the tree over HTTP as its web
    seed, opentracker), a node's peer fetching it and waiting for the whole tree (p2p_peer), cache_install linking it
    onto the node's v1 with the trust list; the model-signing signature travels in the tree to beside the model. Then
    the node role's p2p tasks give the model its signature back without joining a swarm."""
    dirs, _results = staged
    tree = tmp_path / "export" / "delta"
    shutil.copytree(dirs["delta-tree"], tree)
    model_key = ec_key(tmp_path / "model-signing.pem")
    cache, incoming = tmp_path / "cache", tmp_path / "cache" / ".modelseed" / "p2p"
    subprocess.run(["cp", "-a", str(applied[2]["all, tar"].parent / "template-v1-all"), str(cache)], check=True)  # v1, the base
    weights_inode = (cache / MODELS_DIR / WEIGHTS).stat().st_ino
    tracker = Tracker([], "127.0.0.1", tmp_path / "tracker", port=free_port()).start()
    peer = {"torrent": str(incoming / "delta.torrent"), "state_dir": str(incoming / "peers")}
    trust = {"allowed_signers": str(dirs["allowed_signers"]), "identities": ["release@example.com"]}
    try:
        with served(tmp_path / "export") as url:
            signed, made = run_modules([
                {"modelseed.fleet.bundle_sign": {"path": str(tree), "key": str(dirs["allowed_signers"].parent / "release"),
                                                 "model_signing_key": str(model_key)}},
                {"modelseed.fleet.p2p_torrent": {"path": str(tree), "dest": str(tmp_path / "export" / "delta.torrent"),
                                                 "tracker": tracker.announce, "web_seeds": [url + "/"], "whitelist": str(tracker.whitelist)}},
            ], tmp_path)
            assert not signed.get("failed") and not made.get("failed"), (signed, made)
            tracker.reload()
            joined, installed = run_modules([
                {"modelseed.fleet.p2p_peer": {**peer, "url": f"{url}/delta.torrent", "dest": str(incoming), "address": "127.0.0.1",
                                              "port": free_port(), "wait": True, "timeout": 120}},
                install(incoming / "delta", cache, layout="all", src_files="link", trust=trust),
            ], tmp_path)
            # The node role's p2p transport on a node that lost the signature: it needs no model file, so it joins no
            # swarm and brings the model in line from the tree's URL, which serves no model files to a node that needs them.
            signature = Path(f"{cache / MODELS_DIR}.sig")
            installed_signature = signature.read_bytes()
            signature.unlink()
            role = node_p2p_play(tmp_path, cache, f"{url}/delta/", trust)
            refused = run_modules([install(f"{url}/delta", tmp_path / "fresh", layout="all")], tmp_path)[0]
    finally:
        tracker.stop()
        for pid in aria2_processes(str(tmp_path)):  # the peer this test started
            os.kill(pid, 9)
    assert joined["complete"] and joined["tree"] == str(incoming / "delta"), joined
    assert installed["changed"] and "delta on v1 commit" in installed["msg"], installed["msg"]
    assert installed["bytes_installed"] == len(NEW_CONFIG) and installed["signer"].startswith("release@example.com ")
    assert (cache / MODELS_DIR / "config.json").read_bytes() == NEW_CONFIG
    assert (cache / MODELS_DIR / WEIGHTS).stat().st_ino == weights_inode  # lent by the base, not carried
    assert installed_signature == signature.read_bytes() == (tree / "Qwen--Qwen2.5-0.5B-Test--v2.sig").read_bytes()
    assert role.returncode == 0, role.stdout[-5000:] + role.stderr[-3000:]
    assert "fixed 1 model(s): Qwen/Qwen2.5-0.5B-Test@v2 (model-signing signature missing)" in " ".join(role.stdout.split()), role.stdout[-5000:]
    assert re.search(r"localhost\s+: ok=\d+\s+changed=1\s", role.stdout), role.stdout[-3000:]  # no peer started: that would change
    # A node without the base: the delta is refused as from a directory, before anything changes.
    assert refused.get("failed") and "is a delta bundle on Qwen/Qwen2.5-0.5B-Test@v1" in refused["msg"], refused
    assert not (tmp_path / "fresh").exists()
    verified = model_signing_verify(cache / MODELS_DIR, model_key.with_suffix(".pub"))
    assert verified.returncode == 0 and "Verification succeeded" in verified.stdout, verified


def node_p2p_play(tmp_path: Path, cache: Path, bundle_url: str, trust: dict) -> subprocess.CompletedProcess:
    """The node role's p2p tasks on this host, with the staging host's bundle at ``bundle_url``; no torrent is served."""
    playbook = tmp_path / "node-p2p.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable, "node_cache_dir": str(cache), "node_layout": "all",
                 "node_p2p_torrent_url": "http://127.0.0.1:9/p2p/delta.torrent", "node_pull_staging_url": bundle_url,
                 "node_trust_allowed_signers": trust["allowed_signers"], "node_trust_identities": trust["identities"]},
        "tasks": [{"ansible.builtin.include_role": {"name": "modelseed.fleet.node", "tasks_from": "p2p.yml"}}]}]))
    return subprocess.run(playbook_command(playbook), env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default"), capture_output=True, text=True,
                          timeout=300, check=False)


# The swap that publishes the model: killed just before it the node has v1, just after it v2.
KILL_POINTS = [("swap.before", "old"), ("swap.after", "new")]


def test_delta_install_killed_at_the_swap_leaves_old_or_new(staged, tmp_path):
    dirs, _results = staged
    template = tmp_path / "template"
    args = {"src": str(dirs["delta-tar"]), "layout": "models"}
    assert not run_module("cache_install", {"src": str(dirs["full"]), "cache_dir": str(template), "layout": "models"}, tmp_path).get("failed")
    old = digest(template / MODELS_DIR)
    for step, left in KILL_POINTS:
        cache = tmp_path / step
        subprocess.run(["cp", "-a", str(template), str(cache)], check=True)
        killed = run_module("cache_install", {**args, "cache_dir": str(cache)}, tmp_path, {"MODELSEED_FAILPOINT": step})
        assert killed.get("killed") == 9, killed.get("msg")
        now = digest(cache / MODELS_DIR)
        assert not lying_records(cache)
        again = run_module("cache_install", {**args, "cache_dir": str(cache)}, tmp_path)
        assert not again.get("failed"), (step, again.get("msg"))
        new = digest(cache / MODELS_DIR)
        assert now == (old if left == "old" else new) and old != new
        assert (cache / MODELS_DIR / "config.json").read_bytes() == NEW_CONFIG
        assert not lying_records(cache)
        shutil.rmtree(cache)
