"""modelscope_model through ansible-playbook against the loopback hub."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import state
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import state_path
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.locks import FileLock
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.api import HubApi, Resolved, select_files
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpClient
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.model_sync import ModelCache
from support.interrupt import content_digest
from support.judging import judge
from support.mshub import MsHub, make_repo, push_commit
from support.playbook import ansible_env, playbook_command, run_tasks, write_playbook
from support.processes import kill_tree
from support.sample_models import MODEL, model_files
from support.table_play import Row, run_table, table_play

ESCAPED_DIR = "models/Qwen/Qwen2___5-0___5B-Test"


def download(hub, cache, **options):
    args = {"name": MODEL, "cache_dir": str(cache), "endpoint": hub.url, "layout": "all", "retries": 2, **options}
    return {"modelseed.fleet.modelscope_model": args}


def assert_model_files(model_dir: Path, files=None):
    for rel, data in (files or model_files()).items():
        assert (model_dir / rel).read_bytes() == data, rel


@pytest.fixture(scope="module")
def seeded_cache(hub, tmp_path_factory) -> Path:
    """A cache holding the model in the `all` layout: a test that changes one copies it rather than download again
    (copytree keeps the mtimes its records hold)."""
    cache = tmp_path_factory.mktemp("seeded") / "cache"
    result = run_tasks([download(hub, cache)])[0]
    assert not result.get("failed"), result["msg"]
    return cache


def test_check_real_check_real(hub, tmp_path):
    cache = tmp_path / "cache"
    task = download(hub, cache)
    mark = len(hub.log)
    run = run_tasks([{**task, "check_mode": True}, task, {**task, "check_mode": True}, task])
    assert [r["changed"] for r in run.results] == [True, True, False, False], [r.get("msg") for r in run.results]
    assert not any(r.get("failed") for r in run.results)
    check, real, again = run.results[0], run.results[1], run.results[3]
    total = sum(len(v) for v in model_files().values())
    assert check["bytes_downloaded"] == total and len(check["files_downloaded"]) == len(model_files())
    assert real["bytes_downloaded"] == total and real["bytes_reused"] == 0
    assert again["bytes_downloaded"] == 0 and again["bytes_reused"] == total
    assert real["path"] == str(cache / ESCAPED_DIR) and real["layout"] == "all"
    assert "missing or changed on the hub" in real["msg"] and "present and recorded" in again["msg"]
    # Each file was fetched once, by the one real run.
    assert hub.log.downloads(mark) == {name: 1 for name in model_files() if model_files()[name]}
    assert_model_files(cache / ESCAPED_DIR)
    assert os.readlink(cache / "hub/Qwen/Qwen2___5-0___5B-Test") == "../../models/Qwen/Qwen2___5-0___5B-Test"
    for name in (".msc", ".mdl", ".mv"):
        assert (cache / ESCAPED_DIR / name).stat().st_mode & 0o777 == 0o644
    # Nothing is left in the scratch areas.
    state = cache / ".modelseed"
    assert not [p for kind in ("incoming", "partial", "progress") for p in (state / kind).rglob("*")]


def test_second_run_reads_no_file_contents(hub, seeded_cache, tmp_path):
    cache = Path(shutil.copytree(seeded_cache, tmp_path / "cache", symlinks=True))
    weights = cache / ESCAPED_DIR / "weights/model-00001.bin"
    # Same size, other bytes, the old mtime: only a run that reads the contents can notice.
    st = weights.stat()
    weights.write_bytes(b"\0" * st.st_size)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    mark = len(hub.log)
    result = run_tasks([download(hub, cache)])[0]
    assert result["changed"] is False, result["msg"]
    assert hub.log.downloads(mark) == {}


LAYOUTS = [
    ("hub", "hub/Qwen/Qwen2___5-0___5B-Test"),
    ("models", ESCAPED_DIR),
    ("snapshots", "models/Qwen--Qwen2.5-0.5B-Test/snapshots/master"),
]


@pytest.fixture(scope="module")
def layout_rows(hub, tmp_path_factory) -> tuple[dict[str, Row], dict[str, Path]]:
    """A download into a cache of its own in each of LAYOUTS, in one play: (rows, each layout's cache)."""
    caches = {layout: tmp_path_factory.mktemp(f"layout-{layout}") for layout, _path in LAYOUTS}
    return run_table({layout: download(hub, caches[layout], layout=layout) for layout, _path in LAYOUTS}), caches


@table_play("modelscope_model: layouts")
@pytest.mark.parametrize("layout, path", LAYOUTS)
def test_explicit_layouts(layout_rows, layout, path):
    rows, caches = layout_rows
    result, cache = rows[layout].result, caches[layout]
    assert result["changed"] and result["path"] == str(cache / path)
    assert_model_files(cache / path)
    assert (cache / path / ".msc").exists() == (layout != "snapshots")


def test_corrupt_file_is_fetched_again_alone(hub, seeded_cache, tmp_path):
    cache = Path(shutil.copytree(seeded_cache, tmp_path / "cache", symlinks=True))
    victim = cache / ESCAPED_DIR / "weights/model-00002.bin"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    mark = len(hub.log)
    result = run_tasks([download(hub, cache)])[0]
    assert result["changed"] and result["files_downloaded"] == ["weights/model-00002.bin"]
    assert hub.log.downloads(mark) == {"weights/model-00002.bin": 1}
    assert_model_files(cache / ESCAPED_DIR)


def test_adopt_files_placed_by_hand(hub, tmp_path):
    cache = tmp_path / "cache"
    files = model_files()
    target = cache / ESCAPED_DIR
    for rel in ("weights/model-00001.bin", "config.json"):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / rel).write_bytes(files[rel])
    (target / "tokenizer.json").write_bytes(b"x" * len(files["tokenizer.json"]))  # same size, wrong bytes
    mark = len(hub.log)
    result = run_tasks([download(hub, cache)])[0]
    assert sorted(result["files_adopted"]) == ["config.json", "weights/model-00001.bin"]
    assert "weights/model-00001.bin" not in hub.log.downloads(mark)
    assert hub.log.downloads(mark)["tokenizer.json"] == 1
    assert_model_files(target)


def test_adopt_from_another_directory(hub, tmp_path):
    elsewhere = tmp_path / "aria2"
    (elsewhere / "weights").mkdir(parents=True)
    (elsewhere / "weights/model-00001.bin").write_bytes(model_files()["weights/model-00001.bin"])
    mark = len(hub.log)
    result = run_tasks([download(hub, tmp_path / "cache", adopt_from=str(elsewhere))])[0]
    assert result["files_adopted"] == ["weights/model-00001.bin"]
    assert "weights/model-00001.bin" not in hub.log.downloads(mark)
    assert_model_files(tmp_path / "cache" / ESCAPED_DIR)


def test_include_exclude(hub, tmp_path):
    result, nothing = run_tasks([download(hub, tmp_path / "json", include=["*.json"], exclude=[".hidden/*"]),
                                 download(hub, tmp_path / "gguf", include=["*.gguf"])]).results
    assert result["files"] == 2
    files = sorted(p.name for p in (tmp_path / "json" / ESCAPED_DIR).iterdir() if p.is_file())
    assert files == [".mdl", ".msc", ".mv", "config.json", "tokenizer.json"]
    assert nothing["failed"] and "no file matches" in nothing["msg"]


def test_tag_and_commit_resolve_to_the_same_files(hub, tmp_path):
    # The second task asks for the commit the first one resolved the tag to (step_0: the first task's result).
    by_tag, by_commit = run_tasks([download(hub, tmp_path / "a", revision="v1.0", layout="snapshots"),
                                   download(hub, tmp_path / "b", revision="{{ step_0.commit[:12] }}", layout="snapshots")]).results
    assert by_commit["revision"] == by_tag["commit"][:12], by_commit
    assert by_tag["commit"] == by_commit["commit"]
    assert by_tag["path"].endswith("/snapshots/v1.0")
    assert content_digest(Path(by_tag["path"])) == content_digest(Path(by_commit["path"]))


def test_push_during_download_does_not_mix_revisions(tmp_path):
    root = tmp_path / "hub"
    old = {"a.bin": b"old-a" * 1000, "b.bin": b"old-b" * 1000}
    first = make_repo(root, "o/moving", old, versioned=True)
    with MsHub(root) as hub:
        # Master moves once the listing is served, while a.bin is still held back.
        hub.faults.add(action="delay", file="a.bin", delay=2.0, times=1)

        def push_after_listing():
            deadline = time.time() + 60
            while time.time() < deadline and not any("/repo/files" in r.path for r in hub.log.entries()):
                time.sleep(0.02)
            push_commit(root, "o/moving", {"a.bin": b"new-a", "b.bin": b"new-b"})

        pusher = threading.Thread(target=push_after_listing)
        pusher.start()
        result = run_tasks([{"modelseed.fleet.modelscope_model": {
            "name": "o/moving", "cache_dir": str(tmp_path / "c"), "endpoint": hub.url, "layout": "models", "workers": 1}}])[0]
        pusher.join()
    assert not result.get("failed"), result["msg"]
    assert result["commit"] == first
    model = tmp_path / "c/models/o/moving"
    assert (model / "a.bin").read_bytes() == old["a.bin"] and (model / "b.bin").read_bytes() == old["b.bin"]
    assert all(first in r.query for r in hub.log.entries() if r.file and r.path.endswith("/repo"))


def test_kill_mid_file_then_resume(tmp_path):
    root = tmp_path / "hub"
    big = os.urandom(24 << 20)
    make_repo(root, "o/big", {"big.bin": big, "small.txt": b"s"})
    cache = tmp_path / "cache"
    partial_dir = cache / ".modelseed/partial"
    with MsHub(root, redirect_threshold=None) as hub:
        hub.faults.add(action="throttle", file="big.bin", rate=4 << 20)
        task = {"modelseed.fleet.modelscope_model": {"name": "o/big", "cache_dir": str(cache), "endpoint": hub.url, "layout": "models"}}
        playbook = write_playbook([task], tmp_path / "killed.yml")
        proc = subprocess.Popen(playbook_command(playbook), env=ansible_env(), start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        partial = None
        while time.time() < deadline:
            parts = list(partial_dir.rglob("big.bin")) if partial_dir.exists() else []
            if parts and parts[0].stat().st_size > (6 << 20):
                partial = parts[0]
                break
            time.sleep(0.05)
        kill_tree(proc.pid)
        proc.wait()
        assert partial is not None, "the download never got going"
        kept = partial.stat().st_size
        assert not (cache / "models/o/big/big.bin").exists(), "an unverified file got its final name"
        hub.faults.clear()
        # The hub logs a request when it ends: wait for the one the kill cut short.
        while time.time() < deadline and not any(r.file == "big.bin" for r in hub.log.entries()):
            time.sleep(0.05)
        mark = len(hub.log)
        result = run_tasks([task])[0]
        assert not result.get("failed"), result["msg"]
        resumed = [r for r in hub.log.entries(mark) if r.file == "big.bin"]
        assert resumed[0].range == f"bytes={kept}-"
        assert sum(r.sent for r in resumed) == len(big) - kept
    assert (cache / "models/o/big/big.bin").read_bytes() == big


BAD_IDS = [
    ("../x", "invalid model id"),
    ("", "invalid model id"),
    ("has space/x", "invalid model id"),
    ("a/b/c", "invalid model id"),
    ("nobody/nothing", "not found"),
]


@pytest.fixture(scope="module")
def bad_id_rows(hub, tmp_path_factory) -> tuple[dict[str, Row], dict[str, Path]]:
    """A download of each of BAD_IDS into a cache of its own, in one play: (rows, each name's cache)."""
    caches = {name: tmp_path_factory.mktemp("bad-id") for name, _message in BAD_IDS}
    return run_table({name: download(hub, caches[name], name=name) for name, _message in BAD_IDS}), caches


@table_play("modelscope_model: bad ids")
@pytest.mark.parametrize("name, message", BAD_IDS)
def test_bad_model_ids_fail_clearly(bad_id_rows, name, message):
    rows, caches = bad_id_rows
    result = rows[name].result
    assert result["failed"] and message in result["msg"]
    assert not any(caches[name].rglob("*.bin"))


def test_unknown_revision(hub, tmp_path):
    result = run_tasks([download(hub, tmp_path, revision="no-such-branch")])[0]
    assert result["failed"] and "unknown revision 'no-such-branch'" in result["msg"] and "v1.0" in result["msg"]


def test_wrong_hash_leaves_nothing(tmp_path):
    root = tmp_path / "hub"
    make_repo(root, "o/bad", {"w.bin": b"payload" * 100, "ok.txt": b"fine"})
    with MsHub(root) as hub:
        hub.faults.add(action="wrong_sha", file="w.bin")
        result = run_tasks([{"modelseed.fleet.modelscope_model": {
            "name": "o/bad", "cache_dir": str(tmp_path / "c"), "endpoint": hub.url, "layout": "models", "retries": 1}}])[0]
    assert result["failed"] and "sha256" in result["msg"] and "w.bin" in result["msg"]
    assert not (tmp_path / "c/models/o/bad").exists()
    assert not list((tmp_path / "c/.modelseed/partial").rglob("w.bin"))


def test_token_is_required_and_never_shown(tmp_path):
    root = tmp_path / "hub"
    make_repo(root, "private/m", {"w.bin": os.urandom(2 << 20)})
    secret = "tok-5ecret-value-123"
    with MsHub(root, token=secret, redirect_threshold=1 << 20, object_host="localhost") as hub:
        task = {"name": "private/m", "cache_dir": str(tmp_path / "c"), "endpoint": hub.url, "layout": "models"}
        run = run_tasks([{"modelseed.fleet.modelscope_model": {**task, "token": "wrong"}},
                         {"modelseed.fleet.modelscope_model": {**task, "token": secret}}], verbosity=4)
        denied = run[0]
        assert denied["failed"] and "check the token" in denied["msg"]
        assert not run[1].get("failed"), run[1]["msg"]
        # The object store lives on another origin, as on the real hub: it got no credentials.
        assert [r.auth for r in hub.log.entries() if r.path.startswith("/oss/")] == [False]
    assert secret not in run.stdout + run.stderr
    for path in (tmp_path / "c").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_state_absent(hub, tmp_path):
    task = download(hub, tmp_path, state="absent")
    seeding, *run = run_tasks([download(hub, tmp_path), {**task, "check_mode": True}, task, task]).results
    assert seeding["changed"] and not seeding.get("failed"), seeding["msg"]
    assert [r["changed"] for r in run] == [True, True, False]
    assert not (tmp_path / ESCAPED_DIR).exists() and not os.path.lexists(tmp_path / "hub/Qwen/Qwen2___5-0___5B-Test")


def test_diff_shows_the_commit_and_files_before_and_after(hub, tmp_path):
    task, absent = download(hub, tmp_path), download(hub, tmp_path, state="absent")
    first, real, again, removing = run_tasks([{**task, "check_mode": True, "diff": True}, task, {**task, "diff": True},
                                              {**absent, "check_mode": True, "diff": True}]).results
    files = model_files()
    assert first["diff"]["before"] == "" and f"{ESCAPED_DIR}: {MODEL}@master commit {real['commit'][:12]}" in first["diff"]["after"]
    for name, data in files.items():
        assert f"  {name} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()})" in first["diff"]["after"], name
    assert again["changed"] is False and again["diff"]["before"] == again["diff"]["after"] == first["diff"]["after"]
    assert removing["changed"] is True and removing["diff"]["before"] == first["diff"]["after"] and removing["diff"]["after"] == ""
    assert (tmp_path / ESCAPED_DIR).is_dir()  # the removal was a check


def test_cache_dir_must_be_a_directory(hub, tmp_path):
    (tmp_path / "file").write_text("x")
    file, root = run_tasks([download(hub, tmp_path / "file"), download(hub, "/")]).results
    assert "not a directory" in file["msg"]
    assert "root directory" in root["msg"]


def test_endpoint_and_token_from_the_environment(tmp_path):
    root = tmp_path / "hub"
    make_repo(root, "private/env", {"w.bin": b"weights" * 100})
    with MsHub(root, token="env-token-42") as hub:
        task = {"modelseed.fleet.modelscope_model": {"name": "private/env", "cache_dir": str(tmp_path / "c"), "layout": "models"}}
        result = run_tasks([task], env={"MODELSCOPE_ENDPOINT": hub.url, "MODELSCOPE_API_TOKEN": "env-token-42"})[0]
    assert result["changed"] and not result.get("failed"), result.get("msg")
    assert (tmp_path / "c/models/private/env/w.bin").read_bytes() == b"weights" * 100


def test_cache_info_reports_what_modelscope_model_wrote(hub, tmp_path):
    info = {"modelseed.fleet.cache_info": {"cache_dir": str(tmp_path)}}
    full = {"modelseed.fleet.cache_info": {"cache_dir": str(tmp_path), "verify": "full"}}
    victim = tmp_path / ESCAPED_DIR / "tokenizer.json"
    # Between the clean look and the two others: tokenizer.json zeroed (same size, new mtime), config.json removed.
    size = len(model_files()["tokenizer.json"])
    zero = {"ansible.builtin.command": {"argv": ["dd", "if=/dev/zero", f"of={victim}", f"bs={size}", "count=1", "conv=notrunc"]}}
    seeding, clean, zeroed, removed, quick, slow = run_tasks([
        download(hub, tmp_path), {**info, "check_mode": True}, zero,
        {"ansible.builtin.file": {"path": str(victim.parent / "config.json"), "state": "absent"}}, info, full]).results
    assert not seeding.get("failed") and not zeroed.get("failed") and removed["changed"], [seeding.get("msg"), zeroed, removed]
    (model,) = clean["models"]
    assert not clean["changed"] and model["id"] == MODEL and model["layout"] == "all" and model["complete"]
    assert model["files"] == len(model_files()) and model["bytes"] == sum(map(len, model_files().values()))
    assert model["sdk_generations"] == ["1.15-1.22", "1.23-1.37", ">=1.38"] and clean["problems"] == []
    assert victim.read_bytes() == b"\0" * size
    assert quick["models"][0]["missing"] == ["config.json"] and quick["models"][0]["modified"] == ["tokenizer.json"]
    assert slow["models"][0]["corrupt"] == ["tokenizer.json"] and not slow["models"][0]["complete"]
    assert "1 missing" in slow["problems"][0] and "1 corrupt" in slow["problems"][0]


# -- updates of a model already in the cache: one directory swap -------------------------------------------------

SWAP_ID = "o/swapped"
SWAP_REL = "models/o/swapped"
SWAP_OLD = {"a.bin": b"old-a" * 40000, "b.bin": b"same-b" * 30000, "sub/c.txt": b"same-c" * 100, "config.json": b"{}"}
SWAP_CHANGES = {"a.bin": b"new-a" * 41000, "d.bin": b"added-d" * 20000}
SWAP_NEW = {**SWAP_OLD, **SWAP_CHANGES}
USER_FILE = "notes-by-hand.txt"


class Killed(Exception):
    """Stands for a kill -9 at one step of an update: nothing after it runs."""


@pytest.fixture
def moving_repo(tmp_path):
    """A hub of the test's own whose model gets a second commit, and a cache seeded with the first one."""
    root = tmp_path / "hub"
    make_repo(root, SWAP_ID, SWAP_OLD, versioned=True)
    cache = tmp_path / "cache"
    with MsHub(root) as hub:
        seeded = run_tasks([swap_task(hub, cache)])[0]
        assert not seeded.get("failed"), seeded["msg"]
        (cache / SWAP_REL / USER_FILE).write_bytes(b"kept")
        new_commit = push_commit(root, SWAP_ID, SWAP_CHANGES)
        yield hub, cache, new_commit


def swap_task(hub, cache):
    return {"modelseed.fleet.modelscope_model": {"name": SWAP_ID, "cache_dir": str(cache), "endpoint": hub.url, "layout": "all"}}


def model_contents(model: Path) -> dict[str, bytes]:
    """The model's files (of either commit) found in ``model``, and the file put there by hand."""
    return {rel: (model / rel).read_bytes() for rel in [*SWAP_NEW, USER_FILE] if (model / rel).is_file()}


def inodes(model: Path) -> dict[str, int]:
    return {rel: (model / rel).stat().st_ino for rel in ("b.bin", "sub/c.txt", USER_FILE)}


def swap_record(cache: Path, rel: str = SWAP_REL) -> dict:
    return json.loads(Path(state_path(str(cache), "records", rel, ".json")).read_text())


def assert_updated(cache: Path, commit: str, unchanged_inodes: dict[str, int], rel: str = SWAP_REL):
    """The new commit's files in place, the hand-made file kept, the unchanged files the very same, the record new,
    no scratch left."""
    model = cache / SWAP_REL
    assert model_contents(model) == {**SWAP_NEW, USER_FILE: b"kept"}
    assert inodes(model) == unchanged_inodes
    record = swap_record(cache, rel)
    assert record["commit"] == commit
    assert {rel: entry["sha256"] for rel, entry in record["files"].items()} == {
        rel: hashlib.sha256(data).hexdigest() for rel, data in SWAP_NEW.items()}
    assert os.readlink(cache / "hub/o/swapped") == "../../models/o/swapped"
    state = cache / ".modelseed"
    assert not [p for kind in ("incoming", "trash", "partial") for p in (state / kind).rglob("*")]


def test_update_swaps_the_whole_directory(moving_repo, sdk, tls):
    hub, cache, new_commit = moving_repo
    model = cache / SWAP_REL
    dir_before, unchanged = model.stat().st_ino, inodes(model)
    mark = len(hub.log)
    result = run_tasks([swap_task(hub, cache)])[0]
    assert result["changed"] and not result.get("failed"), result["msg"]
    assert sorted(result["files_downloaded"]) == ["a.bin", "d.bin"]
    assert hub.log.downloads(mark) == {"a.bin": 1, "d.bin": 1}
    # Another directory took the name (no file was edited in place), sharing the files that did not change.
    assert model.stat().st_ino != dir_before
    assert_updated(cache, new_commit, unchanged)
    again = run_tasks([swap_task(hub, cache)])[0]
    assert again["changed"] is False, again["msg"]
    judge(sdk("1.40.2"), cache, hub, tls, model=SWAP_ID, files=SWAP_NEW)


def update_in_process(hub, cache: Path):
    """What the module does for one update, in this process, so that a step of it can be made to fail."""
    client = HttpClient(timeout=30, retries=2, auth_url=hub.url)
    api = HubApi(client, hub.url)
    model = ModelCache(str(cache), "all", SWAP_ID, Resolved("master", None, 0))
    model.resolved = api.resolve(SWAP_ID, "master")
    files = select_files(api.list_files(SWAP_ID, model.resolved.commit), [], [])
    with FileLock(model.lock_path, 30):
        model.recover()
        model.apply(model.plan(files), files, client, api)


real_replace_dir = state.replace_dir


def kill_before_exchange(monkeypatch):
    def killed(new, old, aside):
        raise Killed()
    monkeypatch.setattr(state, "replace_dir", killed)


def kill_after_exchange(monkeypatch):
    def killed(new, old, aside):
        real_replace_dir(new, old, aside)
        raise Killed()
    monkeypatch.setattr(state, "replace_dir", killed)


def kill_after_promotion(monkeypatch):
    def killed(root, rel, path):
        raise Killed()
    monkeypatch.setattr(state, "discard", killed)


def kill_while_emptying_trash(monkeypatch):
    def killed(path):
        raise Killed()
    monkeypatch.setattr(state, "remove_tree", killed)


@pytest.mark.parametrize("kill, left_new", [
    (kill_before_exchange, False),
    (kill_after_exchange, True),
    (kill_after_promotion, True),
    (kill_while_emptying_trash, True),
], ids=lambda value: value.__name__ if callable(value) else None)
def test_update_killed_at_each_step_is_finished_by_the_next_run(moving_repo, monkeypatch, kill, left_new):
    hub, cache, new_commit = moving_repo
    model = cache / SWAP_REL
    unchanged = inodes(model)
    mark = len(hub.log)
    with monkeypatch.context() as patched:
        kill(patched)
        with pytest.raises(Killed):
            update_in_process(hub, cache)
    assert hub.log.downloads(mark) == {"a.bin": 1, "d.bin": 1}
    # What the kill left: entirely the old commit or entirely the new one, never a mix.
    assert model_contents(model) == {**(SWAP_NEW if left_new else SWAP_OLD), USER_FILE: b"kept"}
    mark = len(hub.log)
    result = run_tasks([swap_task(hub, cache)])[0]
    assert not result.get("failed"), result["msg"]
    # Only a run killed before the swap left the model to change; no run downloads anything again.
    assert result["changed"] is not left_new, result["msg"]
    assert result["files_downloaded"] == [] and hub.log.downloads(mark) == {}
    assert_updated(cache, new_commit, unchanged)
    again = run_tasks([swap_task(hub, cache)])[0]
    assert again["changed"] is False and hub.log.downloads(mark) == {}, again["msg"]


def test_update_through_a_linked_model_dir_moves_files_in(moving_repo):
    """Where the model directory is a link (the hub layout of a cache seeded with all), there is nothing to swap:
    the new files and the new SDK metadata move into the directory the link points at."""
    hub, cache, new_commit = moving_repo
    model = cache / SWAP_REL
    dir_before, unchanged = model.stat().st_ino, inodes(model)
    task = swap_task(hub, cache)
    task["modelseed.fleet.modelscope_model"]["layout"] = "hub"
    result = run_tasks([task, task]).results
    assert result[0]["changed"] and not result[0].get("failed"), result[0]["msg"]
    assert sorted(result[0]["files_downloaded"]) == ["a.bin", "d.bin"]
    assert result[1]["changed"] is False, result[1]["msg"]  # the metadata is the new commit's too
    assert os.readlink(cache / "hub/o/swapped") == "../../models/o/swapped"
    assert model.stat().st_ino == dir_before
    assert_updated(cache, new_commit, unchanged, rel="hub/o/swapped")


def test_update_where_hard_links_are_refused_moves_files_in(moving_repo, monkeypatch):
    hub, cache, new_commit = moving_repo
    model = cache / SWAP_REL
    dir_before, unchanged = model.stat().st_ino, inodes(model)

    def refuse(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    with monkeypatch.context() as patched:
        patched.setattr(state.os, "link", refuse)
        update_in_process(hub, cache)
    assert model.stat().st_ino == dir_before
    assert_updated(cache, new_commit, unchanged)
    mark = len(hub.log)
    again = run_tasks([swap_task(hub, cache)])[0]
    assert again["changed"] is False and hub.log.downloads(mark) == {}, again["msg"]
