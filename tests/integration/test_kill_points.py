"""kill -9 at named steps: just before and after each rename or exchange that publishes a model and each record
that takes its place (``MODELSEED_FAILPOINT``, see plugins/module_utils/_fs/failpoints.py). After each kill every model
directory is entirely the old or the new one and no record calls a file verified that does not hold its bytes; the
next run completes. Module processes are killed directly (a playbook each would cost a second more); one playbook
shows that the failpoint reaches a module through ansible-playbook. Each kill is counted in the hostile-world tally
(support.reliability), before it is asserted on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import model_dir
from support import reliability
from support.bundles import ModelSpec, write_bundle
from support.cache_audit import lying_records
from support.module_process import run_module
from support.mshub import MsHub, make_repo, push_commit
from support.playbook import run_tasks

KiB = 1 << 10
MODELS = ("points/first", "points/second")
RELS = [model_dir("models", m, "master") for m in MODELS]
OUTCOME = "killed there: old or new, no record lies, the next run completes"

pytestmark = pytest.mark.hostile


def tally(module: str, step: str, ok: bool, lying: list[str]) -> None:
    """A named-step kill always lands while the module is working: it kills itself there."""
    reliability.record(f"kill -9 at {step.split('@')[0]}: {module}", outcome=OUTCOME, handled=int(ok), corrupt=len(lying),
                       kill="before completion")


def files(generation: int) -> dict[str, bytes]:
    return {"config.json": b'{"generation": %d}' % generation, "weights/model.bin": os.urandom(256 * KiB),
            "weights/deep/extra.bin": os.urandom(3 * KiB)}


def digest(top: Path) -> dict[str, str] | None:
    """What a reader sees below ``top``: files by content, links by target; None when it is not there."""
    if not top.is_dir():
        return None
    out = {}
    for path in sorted(top.rglob("*")):
        rel = str(path.relative_to(top))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def copy_tree(source: Path, target: Path) -> Path:
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    return target


def state(now, old, new) -> str:
    return "old" if now == old else "new" if now == new else "mixed"


# step, how many models the killed run has put in place (of MODELS, in the bundle's order)
INSTALL_POINTS = [("swap.before@1", 0), ("swap.after@1", 1), ("record.before@1", 1), ("record.after@1", 1),
                  ("swap.before@2", 1), ("swap.after@2", 2), ("record.after@2", 2)]


def test_cache_install_killed_at_each_named_step(tmp_path):
    old = write_bundle(tmp_path / "old", [ModelSpec(m, files(1)) for m in MODELS])
    new = write_bundle(tmp_path / "new", [ModelSpec(m, files(2), created_at=1710000000) for m in MODELS])
    template = tmp_path / "template"

    def install(cache: Path, env: dict | None = None) -> dict:
        return run_module("cache_install", {"src": str(new), "cache_dir": str(cache), "layout": "models"}, tmp_path, env)

    assert not run_module("cache_install", {"src": str(old), "cache_dir": str(template), "layout": "models"}, tmp_path).get("failed")
    olds = [digest(template / rel) for rel in RELS]
    reference = copy_tree(template, tmp_path / "reference")
    assert not install(reference).get("failed")
    news = [digest(reference / rel) for rel in RELS]
    order = [m["id"] for m in json.loads((new / "manifest.json").read_text())["models"]]
    for step, in_place in INSTALL_POINTS:
        cache = copy_tree(template, tmp_path / step)
        killed = install(cache, {"MODELSEED_FAILPOINT": step})
        states = {m: state(digest(cache / rel), o, n) for m, rel, o, n in zip(MODELS, RELS, olds, news, strict=True)}
        lying = lying_records(cache)
        again = install(cache)
        lying += lying_records(cache)
        ok = (killed.get("killed") == 9 and states == {m: "new" if order.index(m) < in_place else "old" for m in MODELS}
              and not again.get("failed") and [digest(cache / rel) for rel in RELS] == news
              and not list((cache / ".modelseed" / "trash").glob("*")))
        tally("cache_install", step, ok, lying)
        assert killed.get("killed") == 9, f"{step}: the run was not killed there: {killed.get('msg')}"
        assert ok and not lying, (step, states, lying, again.get("msg"))
        shutil.rmtree(cache)


# step, state the killed run left
UPDATE_POINTS = [("fetch.before-rename", "old"), ("fetch.after-rename@2", "old"), ("swap.before", "old"),
                 ("swap.after", "new"), ("record.before", "new"), ("record.after", "new")]
FIRST_POINTS = [("swap.before", None), ("swap.after", "new"), ("record.before", "new"), ("record.after", "new")]


def test_modelscope_model_killed_at_each_named_step(tmp_path):
    repo = "points/download"
    root, empty = tmp_path / "hub", tmp_path / "empty"
    rel = model_dir("models", repo, "master")
    make_repo(root, repo, files(1), versioned=True)
    empty.mkdir()
    with MsHub(root) as hub:
        args = {"name": repo, "endpoint": hub.url, "layout": "models", "workers": 2}

        def download(cache: Path, env: dict | None = None) -> dict:
            return run_module("modelscope_model", {**args, "cache_dir": str(cache)}, tmp_path, env)

        older = tmp_path / "older"
        assert not download(older).get("failed")
        old = digest(older / rel)
        push_commit(root, repo, {"weights/model.bin": os.urandom(256 * KiB), "config.json": b'{"generation": 2}'})
        # An update keeps the .mv of the commit before (SDKs ignore its date): a new state of its own.
        fresh, updated = tmp_path / "fresh", copy_tree(older, tmp_path / "updated")
        assert not download(fresh).get("failed") and not download(updated).get("failed")
        news = {"first": digest(fresh / rel), "update": digest(updated / rel)}
        assert old not in news.values()
        cases = [("update", step, left) for step, left in UPDATE_POINTS] + [("first", step, left) for step, left in FIRST_POINTS]
        for start, step, left in cases:
            cache = copy_tree(older if start == "update" else empty, tmp_path / f"{start}-{step}")
            killed = download(cache, {"MODELSEED_FAILPOINT": step})
            now = digest(cache / rel)
            lying = lying_records(cache)
            mark = len(hub.log)
            again = download(cache)
            lying += lying_records(cache)
            # What the killed run verified is not fetched again.
            refetched = hub.log.downloads(mark) if step.startswith(("swap", "record")) else {}
            ok = (killed.get("killed") == 9 and (now is None if left is None else state(now, old, news[start]) == left)
                  and not again.get("failed") and digest(cache / rel) == news[start] and not refetched)
            tally(f"modelscope_model ({start})", step, ok, lying)
            assert killed.get("killed") == 9, f"{start} {step}: the run was not killed there: {killed.get('msg')}"
            assert ok and not lying, (start, step, now, lying, refetched, again.get("msg"))
            shutil.rmtree(cache)


BUNDLE_POINTS = [("swap.before", "old"), ("swap.after", "new")]


def test_cache_bundle_killed_at_each_named_step(tmp_path):
    """The new bundle directory is swapped with dest in one step: killed on either side of it, dest is the whole old
    bundle or the whole new one, and the next run leaves the new one."""
    caches = []
    for generation in (1, 2):
        bundle = write_bundle(tmp_path / f"source{generation}", [ModelSpec(m, files(generation)) for m in MODELS])
        caches.append(tmp_path / f"cache{generation}")
        assert not run_module("cache_install", {"src": str(bundle), "cache_dir": str(caches[-1]), "layout": "models"}, tmp_path).get("failed")

    def pack(cache: Path, dest: Path, env: dict | None = None) -> dict:
        return run_module("cache_bundle", {"cache_dir": str(cache), "dest": str(dest), "models": [{"name": m} for m in MODELS]},
                          tmp_path, env)

    template = tmp_path / "template" / "bundle"
    template.parent.mkdir()
    assert not pack(caches[0], template).get("failed")
    reference = copy_tree(template.parent, tmp_path / "reference") / "bundle"
    assert not pack(caches[1], reference).get("failed")
    old, new = digest(template), digest(reference)
    assert old != new
    for step, left in BUNDLE_POINTS:
        dest = copy_tree(template.parent, tmp_path / step) / "bundle"
        killed = pack(caches[1], dest, {"MODELSEED_FAILPOINT": step})
        now = state(digest(dest), old, new)
        again = pack(caches[1], dest)
        ok = killed.get("killed") == 9 and now == left and not again.get("failed") and digest(dest) == new
        tally("cache_bundle", step, ok, [])
        assert killed.get("killed") == 9, f"{step}: the run was not killed there: {killed.get('msg')}"
        assert ok, (step, now, again.get("msg"))
        shutil.rmtree(dest.parent)


def test_failpoint_reaches_a_module_run_by_ansible_playbook(tmp_path):
    """The variable set on a task kills the module right after the swap; the next task finds the install done (the
    pending record promoted) and has nothing left to change."""
    bundle = write_bundle(tmp_path / "bundle", [ModelSpec(MODELS[0], files(1))])
    cache = tmp_path / "cache"
    task = {"modelseed.fleet.cache_install": {"src": str(bundle), "cache_dir": str(cache), "layout": "models"}}
    killed, completed = run_tasks([{**task, "environment": {"MODELSEED_FAILPOINT": "swap.after"}}, task]).results
    assert killed.get("failed") and killed.get("rc") == 128 + 9 and killed["module_stderr"].strip() == "Killed", killed
    assert not completed.get("failed") and completed["changed"] is False, completed.get("msg")
    assert digest(cache / RELS[0]) is not None and lying_records(cache) == []
