"""Under ``strace -f``: every file and directory a module publishes is fsynced before the rename or exchange that
publishes it, and the directories that step changed before the record that calls the files verified takes its place.
With ``sync: false`` the same check finds what is not synced, which shows that it can fail."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import model_dir
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import state_path
from support import lossy_fs
from support.bundles import ModelSpec, write_bundle
from support.cache_audit import lying_records
from support.module_process import module_command, parse_result, run_module
from support.mshub import MsHub, make_repo, push_commit
from support.syscall_trace import Replay, calls, strace_available, trace

MODELS = ("sync/first", "sync/second")


def files(generation: int) -> dict[str, bytes]:
    return {"config.json": b'{"generation": %d}' % generation, "weights/shard-1.bin": os.urandom(300 << 10),
            "weights/deep/shard-2.bin": os.urandom(70 << 10), "tokenizer/vocab.txt": b"a\nb\n" * generation}


def entries(top: Path) -> list[str]:
    """Relative paths of every directory (top itself as '') and regular file below ``top``."""
    out = [""]
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_dir() or (path.is_file() and not path.is_symlink()):
                out.append(str(path.relative_to(top)))
    return out


def unsynced_publications(log: Path, published: dict[str, Path], records: dict[str, str]) -> tuple[list[str], set[str], set[str]]:
    """Replay the trace: (problems, model directories seen published, records seen placed).

    ``published``: final model directory -> its tree after the run (what the publishing rename must carry, all synced);
    ``records``: record path -> its model directory."""
    replay, problems, seen, placed = Replay(), [], set(), set()
    for call in calls(log):
        names = [s for s in call.strings() if s.startswith("/")]
        if call.name.startswith("rename") and len(names) == 2:
            source, target = names
            if target in published:
                seen.add(target)
                problems += [f"{target}: {rel or '.'} not synced before the {call.name} that published it"
                             for rel in entries(published[target]) if (f"{source}/{rel}" if rel else source) not in replay.synced]
            if target in records:
                placed.add(target)
                model = records[target]
                if model not in seen:
                    problems.append(f"{target}: record placed before its model directory was published")
                if os.path.dirname(model) not in replay.synced:
                    problems.append(f"{target}: placed before the directory holding {model} was synced")
                if source not in replay.synced:
                    problems.append(f"{target}: its data was not synced before it was renamed into place")
        replay.apply(call)
    return problems, seen, placed


def traced(name: str, args: dict, workdir: Path, log: Path) -> dict:
    command, env = module_command(name, args, workdir)
    result = parse_result(trace(command, log, env))
    assert not result.get("failed"), result.get("msg")
    return result


@pytest.fixture(autouse=True)
def needs_strace():
    if not strace_available():
        pytest.skip("strace is not installed (make sysdeps)")


def install_case(tmp_path: Path, sync: bool) -> tuple[list[str], set[str], set[str], set[str]]:
    """Install a bundle of two models, then trace the install of a newer one over it (exchanges) and of a third
    model (a plain rename)."""
    cache = tmp_path / "cache"
    old = write_bundle(tmp_path / "old", [ModelSpec(m, files(1)) for m in MODELS])
    new = write_bundle(tmp_path / "new", [ModelSpec(m, files(2), created_at=1710000000) for m in (*MODELS, "sync/third")])
    assert not run_module("cache_install", {"src": str(old), "cache_dir": str(cache), "layout": "models"}, tmp_path).get("failed")
    log = tmp_path / f"install-{sync}.strace"
    result = traced("cache_install", {"src": str(new), "cache_dir": str(cache), "layout": "models", "sync": sync}, tmp_path, log)
    assert [m["action"] for m in result["models"]] == ["replace", "replace", "install"], result["msg"]
    rels = [model_dir("models", m, "master") for m in (*MODELS, "sync/third")]
    published = {str(cache / rel): cache / rel for rel in rels}
    records = {state_path(str(cache), "records", rel, ".json"): str(cache / rel) for rel in rels}
    return (*unsynced_publications(log, published, records), set(published))


def test_cache_install_syncs_each_model_before_its_swap(tmp_path):
    problems, seen, placed, wanted = install_case(tmp_path, sync=True)
    assert seen == wanted and len(placed) == len(wanted)
    assert problems == []


def test_cache_install_without_sync_publishes_unsynced_files(tmp_path):
    problems, seen, _placed, wanted = install_case(tmp_path, sync=False)
    assert seen == wanted
    assert any("weights/deep/shard-2.bin not synced" in p for p in problems), problems


def test_modelscope_model_syncs_new_and_updated_models_before_they_get_their_name(tmp_path):
    """A first download (incoming/ renamed into place) and an update (incoming/ completed with hard links to the
    unchanged files and exchanged)."""
    repo = "sync/download"
    root, cache = tmp_path / "hub", tmp_path / "cache"
    make_repo(root, repo, files(1), versioned=True)
    rel = model_dir("models", repo, "master")
    published = {str(cache / rel): cache / rel}
    records = {state_path(str(cache), "records", rel, ".json"): str(cache / rel)}
    with MsHub(root) as hub:
        args = {"name": repo, "cache_dir": str(cache), "endpoint": hub.url, "layout": "models", "workers": 2}
        for step in ("first", "update"):
            if step == "update":
                push_commit(root, repo, {"weights/shard-1.bin": os.urandom(300 << 10), "config.json": b'{"generation": 3}'})
            log = tmp_path / f"{step}.strace"
            result = traced("modelscope_model", args, tmp_path, log)
            assert result["changed"] and result["files_downloaded"], result["msg"]
            problems, seen, placed = unsynced_publications(log, published, records)
            assert seen == set(published) and placed == set(records), step
            assert problems == [], step


# -- a power failure, simulated --------------------------------------------------------------------------------


def test_power_failure_leaves_no_record_that_lies(tmp_path):
    """Under a file system that drops what was not fsynced: after a power failure at the end of an install, with
    sync every model is complete and every record true; without sync records call files verified that came back
    as zeros (which shows that the layer loses data). A power failure between the renames of a swap leaves that model
    missing, one after the swap and before its record leaves it new; the next model is old, and the next run completes."""
    reason = lossy_fs.available()
    if reason:
        pytest.skip(reason)
    spec = [ModelSpec(m, files(1)) for m in MODELS]
    bundle, newer = write_bundle(tmp_path / "bundle", spec), write_bundle(tmp_path / "newer", [ModelSpec(m, files(2)) for m in MODELS])
    rels = [model_dir("models", m, "master") for m in MODELS]
    lies = {}
    for sync in (True, False):
        disk = tmp_path / f"disk-{sync}"
        with lossy_fs.LossyMount(disk, tmp_path / f"mount-{sync}") as mount:
            args = {"src": str(bundle), "cache_dir": str(mount.mountpoint / "cache"), "layout": "models", "sync": sync}
            assert not run_module("cache_install", args, tmp_path).get("failed")
            mount.power_loss()
        lies[sync] = lying_records(disk / "cache")
    assert lies[True] == []
    assert lies[False], "the file system lost nothing: the test shows nothing"

    # Where libfuse2 cannot exchange (RENAME_EXCHANGE is refused), the old copy is renamed aside first: for an
    # instant the model is missing, then new.
    installed = tmp_path / "disk-True"
    before = [digest(installed / "cache" / rel) for rel in rels]
    for step, left in (("swap.aside@1", [None, "old"]), ("record.before@1", ["new", "old"])):
        disk, mountpoint = tmp_path / f"disk-{step}", tmp_path / f"mount-{step}"
        subprocess.run(["cp", "-a", str(installed), str(disk)], check=True)
        with lossy_fs.LossyMount(disk, mountpoint) as mount:
            args = {"src": str(newer), "cache_dir": str(mountpoint / "cache"), "layout": "models"}
            killed = run_module("cache_install", args, tmp_path, {"MODELSEED_FAILPOINT": step})
            assert killed.get("killed") == 9, killed.get("msg")
            mount.power_loss()
        now = [digest(disk / "cache" / rel) for rel in rels]
        assert [None if n is None else "old" if n == b else "new" for n, b in zip(now, before, strict=True)] == left, step
        assert lying_records(disk / "cache") == [], step
        with lossy_fs.LossyMount(disk, mountpoint):
            assert not run_module("cache_install", args, tmp_path).get("failed"), step
        assert lying_records(disk / "cache") == [], step
        assert all(digest(disk / "cache" / rel) not in (None, b) for rel, b in zip(rels, before, strict=True)), step


def digest(top: Path) -> dict[str, str] | None:
    if not top.is_dir():
        return None
    return {str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(top.rglob("*")) if p.is_file()}
