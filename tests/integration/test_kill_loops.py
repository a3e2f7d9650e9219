"""kill -9 at random moments of modelscope_model, cache_bundle and cache_install, then a run to completion.

Each case first times one run that is not killed, from the moment the module starts writing (a partial
download, a temp tar, a staged file) until its work is in place (the record, SHA256SUMS, the last directory
swapped); every iteration then kills a run at a seeded random delay within that window (and a quarter past it),
checks what the kill left, and runs again to completion.
A kill counts only when the module's process was still alive (stopped, not a zombie) when SIGKILL was sent, and is
tallied as landing before or after the module's work was in place; one that found the process gone counts as missed.
The first iteration of each case kills a run of ansible-playbook and completes through it; the others start the
module as the process Ansible would (``support.module_process``), which spares ansible-playbook's start-up.
The caches and bundles a case starts from are written by module processes too.
``MODELSEED_STRESS_N`` sets the iterations (5), ``MODELSEED_SEED`` replays one.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import model_dir
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import state_path
from support.bundles import ModelSpec, write_bundle
from support.interrupt import Kill, bundle_scratch, bytes_below, content_digest, files_below, spawn, spawn_module, tree_digest, wait_until
from support.judging import judge
from support.module_process import module_of, run_modules
from support.mshub import MsHub, make_repo, push_commit
from support.playbook import run_tasks
from support.reliability import iterations, record, seeded_rng

pytestmark = pytest.mark.hostile

MiB = 1 << 20


def timed_window(tasks: list[dict], workdir: Path, started, finished) -> float:
    """Seconds from ``started()`` to ``finished()`` in one run that is left alone (it must succeed): the span
    in which the module changes things, which the kills are spread over."""
    run = spawn(tasks, workdir)
    assert wait_until(started, run.proc), "the run never started writing"
    began = time.monotonic()
    wait_until(finished, run.proc, step=0.002)
    window = time.monotonic() - began
    run.wait()
    failures = [r.get("msg") for r in run.results() if r.get("failed")]
    assert not failures, failures
    assert finished(), "the run ended without finishing"
    return window


# The kills are spread over the window of one calibration run and a quarter past it, where the last steps (renames,
# swaps) of a slower run fall. Runs on a machine shared with other work vary: a killed run slower than the calibration
# takes more kills before completion, a faster one more after it; the tally shows which, and every kill is judged alike.
OVERSHOOT = 1.25


def kill_after(tasks: list[dict], workdir: Path, started, delay: float, finished, playbook: bool) -> Kill:
    """Start ``tasks`` (one module of this collection), wait for ``started()``, sleep ``delay``, kill -9 the whole
    tree; say whether the module was still alive then and whether ``finished()`` held at that moment.

    ``playbook``: through ansible-playbook, else as the module process Ansible would start."""
    module = module_of(tasks[0])[0]
    run = spawn(tasks, workdir) if playbook else spawn_module(tasks[0], workdir)
    wait_until(started, run.proc)
    time.sleep(delay)
    return run.kill(module=module, work_done=finished)


def complete(tasks: list[dict], workdir: Path, playbook: bool) -> list[dict]:
    """Run ``tasks`` to the end: through ansible-playbook, or as module processes one after another."""
    return run_tasks(tasks).results if playbook else run_modules(tasks, workdir)


def first_through_a_play(attempt: int) -> bool:
    """The first iteration of a case kills and completes runs of ansible-playbook; the others start the module
    without it, as Ansible would: the kill is the module's, not ansible-playbook's."""
    return attempt == 0


def replaced(*paths: Path):
    """A check that each of ``paths`` has been put in place anew since now: renamed or swapped in, so another inode."""
    before = [_ino(path) for path in paths]
    return lambda: all(_ino(path) not in (old, None) for path, old in zip(paths, before, strict=True))


def _ino(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def copy_tree(source: Path, target: Path) -> Path:
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    return target


# -- modelscope_model ------------------------------------------------------------------------------

REPO_ID = "kill/dl"
OLD_FILES = {
    "weights/big-1.bin": random.Random(1).randbytes(10 * MiB),
    "weights/big-2.bin": random.Random(2).randbytes(3 * MiB // 2 + 11),
    "weights/mid.bin": random.Random(3).randbytes(3 * MiB // 4),
    "weights/small.bin": random.Random(4).randbytes(MiB // 4),
    "tokenizer.json": random.Random(5).randbytes(64 << 10),
    "config.json": b'{"model_type": "qwen2"}',
}
CHANGES = {
    "weights/big-1.bin": random.Random(11).randbytes(10 * MiB + 3),
    "weights/mid.bin": random.Random(13).randbytes(3 * MiB // 4),
    "config.json": b'{"model_type": "qwen3"}',
}
NEW_FILES = {**OLD_FILES, **CHANGES}
DL_REL = model_dir("models", REPO_ID, "master")
# Per connection, two workers: the big file takes a few seconds, while the small ones are verified one
# after another beside it, so that kills land inside files and between them.
RATE = 4 * MiB


def download(hub, cache: Path) -> dict:
    options = {"name": REPO_ID, "cache_dir": str(cache), "endpoint": hub.url, "layout": "models", "workers": 2, "retries": 1}
    return {"modelseed.fleet.modelscope_model": options}


def verified_before(cache: Path, files: dict[str, bytes]) -> set[str]:
    """Files waiting in incoming/ with the listed bytes: verified by the killed run."""
    incoming = Path(state_path(str(cache), "incoming", DL_REL))
    return {path for path, data in files.items() if (incoming / path).is_file() and (incoming / path).read_bytes() == data}


def partial_lengths(cache: Path) -> dict[str, int]:
    partial = Path(state_path(str(cache), "partial", DL_REL))
    return {str(p.relative_to(partial)): p.stat().st_size for p in files_below(partial)}


def expected_transfers(files: dict[str, bytes], old_state: str, state: str, verified: set[str], partial: dict[str, int]) -> dict[str, int]:
    """Bytes the completing run must fetch per file: none of what was verified or already in place, the rest
    of each partial file, every other changed file whole."""
    if state == "new":
        return {}
    todo = {}
    for path, data in files.items():
        unchanged = old_state == "old" and OLD_FILES.get(path) == data
        if unchanged or path in verified:
            continue
        todo[path] = len(data) - partial.get(path, 0)
    return todo


def settled(hub) -> int:
    """A mark in the hub's log once the requests a killed run left are all answered (or dropped) and logged:
    under load the hub may take up a dead client's last request a while after the kill."""
    def busy() -> bool:
        return any("process_request_thread" in thread.name for thread in threading.enumerate())

    mark, deadline = -1, time.monotonic() + 60
    while (mark != len(hub.log) or busy()) and time.monotonic() < deadline:
        mark = len(hub.log)
        time.sleep(0.25)
    return mark


def transfers(hub, mark: int) -> tuple[dict[str, int], dict[str, str | None]]:
    """Body bytes per file the hub served since ``mark``, and the Range of each file's first request."""
    sent, first_range = {}, {}
    for r in hub.log.entries(mark):
        if r.download:
            first_range.setdefault(r.file, r.range)
            sent[r.file] = sent.get(r.file, 0) + r.sent
    return sent, first_range


def test_kill_modelscope_model_at_random_moments(tmp_path, sdk, tls):
    """Iterations alternate between an empty cache and one holding the previous commit. After each kill the model
    directory is absent, the previous commit's or the new one's, byte for byte; the next run completes and fetches
    no file that the killed run had verified, and of each partial file only the missing tail."""
    rng, seed = seeded_rng("kill modelscope_model")
    root = tmp_path / "hub"
    make_repo(root, REPO_ID, OLD_FILES, versioned=True)
    empty, older = tmp_path / "empty", tmp_path / "older"
    empty.mkdir()
    with MsHub(root, redirect_threshold=MiB) as hub:
        assert not run_modules([download(hub, older)], tmp_path)[0].get("failed")
        push_commit(root, REPO_ID, CHANGES)
        old_digests = {"empty cache": None, "older commit": content_digest(older / DL_REL)}
        # An update keeps the .mv of the previous commit (its CreatedAt does not matter to SDKs): its own new state.
        updated = copy_tree(older, tmp_path / "updated")
        assert not run_modules([download(hub, updated)], tmp_path)[0].get("failed")
        judge(sdk("1.40.2"), updated, hub, tls, model=REPO_ID, files=NEW_FILES)  # the reference itself is what an SDK wants
        hub.faults.add(action="throttle", file="*", rate=RATE)

        def calibrate() -> tuple[float, Path]:
            """(seconds of one run's window, the copy it ran on: what a run that is not killed leaves)."""
            copy = copy_tree(empty, tmp_path / "calibration")
            partial = Path(state_path(str(copy), "partial", DL_REL))
            recorded = Path(state_path(str(copy), "records", DL_REL, ".json"))
            return timed_window([download(hub, copy)], tmp_path, partial.is_dir, recorded.exists), copy

        window, calibration = calibrate()
        new_digests = {"empty cache": content_digest(calibration / DL_REL), "older commit": content_digest(updated / DL_REL)}
        print(f"window {window:.2f}s")

        outcomes = []
        for attempt in range(iterations()):
            start = ("empty cache", "older commit")[attempt % 2]
            old_digest, new_digest = old_digests[start], new_digests[start]
            cache = copy_tree(empty if start == "empty cache" else older, tmp_path / f"cache-{attempt}")
            delay = rng.uniform(0, window * OVERSHOOT)
            partial = Path(state_path(str(cache), "partial", DL_REL))
            recorded = Path(state_path(str(cache), "records", DL_REL, ".json"))
            hub.faults.clear()
            hub.faults.add(action="throttle", file="*", rate=RATE)
            playbook = first_through_a_play(attempt)
            kill = kill_after([download(hub, cache)], tmp_path, partial.is_dir, delay, replaced(recorded), playbook)
            model = cache / DL_REL
            now = content_digest(model) if model.exists() else None
            state = "old" if now == old_digest else "new" if now == new_digest else "mixed"
            verified, partial_now = verified_before(cache, NEW_FILES), partial_lengths(cache)
            want = expected_transfers(NEW_FILES, "old" if old_digest else "none", state, verified, partial_now)

            hub.faults.clear()
            mark = settled(hub)
            result = complete([download(hub, cache)], tmp_path, playbook)[0]
            sent, first_range = transfers(hub, mark)
            ranges_ok = all(first_range.get(path) == f"bytes={partial_now[path]}-"
                            for path in want if 0 < partial_now.get(path, 0) < len(NEW_FILES[path]))
            completed = not result.get("failed") and content_digest(model) == new_digest
            scratch = [str(p) for kind in ("incoming", "partial", "progress") for p in files_below(cache / ".modelseed" / kind)]
            refetched = {path: n for path, n in sent.items() if n != want.get(path, 0)}
            ok = state != "mixed" and completed and not scratch and not refetched and ranges_ok
            record(f"kill -9 modelscope_model ({start})", outcome="model dir old or new; next run completes, fetches no verified byte again",
                   handled=int(ok), corrupt=int(state == "mixed"), seed=seed, kill=kill.timing)
            outcomes.append(f"{start} {delay:.2f}s ({kill.timing}): {state}, {len(verified)} verified, partial {sorted(partial_now.values())}")
            context = f"seed {seed}, attempt {attempt} ({start}), kill after {delay:.3f}s"
            assert state != "mixed", f"{context}: the model directory is neither the old nor the new one"
            assert completed, f"{context}: {result.get('msg')}"
            assert not scratch, f"{context}: scratch files left after a kill that left {state}: {scratch}"
            requests = [(r.file, r.range, r.status, r.sent, r.port) for r in hub.log.entries(mark) if r.file in refetched]
            assert not refetched and ranges_ok, (f"{context}: fetched {sent}, expected {want}; first ranges {first_range}, "
                                                 f"partial {partial_now}; requests {requests}")
            shutil.rmtree(cache)
    print("kills: " + "; ".join(outcomes))


def test_scratch_left_by_a_run_killed_after_its_record_is_removed(tmp_path):
    """A kill between the record and the cleanup leaves the model complete and its scratch files behind: the next
    run has nothing to download and removes them."""
    root = tmp_path / "hub"
    make_repo(root, REPO_ID, NEW_FILES)
    cache = tmp_path / "cache"
    with MsHub(root) as hub:
        assert not run_modules([download(hub, cache)], tmp_path)[0].get("failed")
        leftovers = [Path(state_path(str(cache), "incoming", DL_REL, ".json")), Path(state_path(str(cache), "progress", DL_REL, ".json")),
                     Path(state_path(str(cache), "partial", DL_REL)) / "weights/mid.bin"]
        for path in leftovers:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
        mark = len(hub.log)
        result = run_tasks([download(hub, cache)])[0]
        assert result["changed"] is False and hub.log.downloads(mark) == {}, result["msg"]
    assert [p for p in leftovers if p.exists()] == []


# -- cache_bundle ------------------------------------------------------------------------------------

BUNDLE_MODELS = ("kill/b1", "kill/b2")


def bundle_files(model: str, generation: int) -> dict[str, bytes]:
    rng = random.Random(f"{model}:{generation}")
    return {"weights/model.bin": rng.randbytes(12 * MiB), "config.json": b'{"generation": %d}' % generation}


def bundle_state(dest: Path) -> dict[str, str]:
    """Files under their final names (temp tars and the lock file left out), by content."""
    return {name: digest for name, digest in content_digest(dest).items() if name != ".lock" and not name.endswith(".tmp")}


def test_kill_cache_bundle_at_random_moments(tmp_path):
    """After each kill the bundle directory holds the previous bundle or the complete new one under its final names;
    the next run completes, cache_info verifies the result and no temp tar is left."""
    rng, seed = seeded_rng("kill cache_bundle")
    root, cache, old_bundle = tmp_path / "hub", tmp_path / "cache", tmp_path / "old-bundle"
    for model in BUNDLE_MODELS:
        make_repo(root, model, bundle_files(model, 1), versioned=True)

    def download_all(hub) -> list[dict]:
        return [{"modelseed.fleet.modelscope_model": {"name": m, "cache_dir": str(cache), "endpoint": hub.url, "layout": "models"}}
                for m in BUNDLE_MODELS]

    def bundle(dest: Path) -> dict:
        return {"modelseed.fleet.cache_bundle": {"cache_dir": str(cache), "dest": str(dest)}}

    def info(dest: Path, verify: str = "quick") -> dict:
        return {"modelseed.fleet.cache_info": {"bundle": str(dest), "verify": verify}, "check_mode": True}

    with MsHub(root) as hub:
        setup = run_modules([*download_all(hub), bundle(old_bundle)], tmp_path)
        assert not any(r.get("failed") for r in setup), [r.get("msg") for r in setup]
        for model in BUNDLE_MODELS:
            push_commit(root, model, bundle_files(model, 2))
        update = run_modules(download_all(hub), tmp_path)
        assert not any(r.get("failed") for r in update), [r.get("msg") for r in update]
    old = bundle_state(old_bundle)

    def writing(dest: Path):
        return lambda: bool(bundle_scratch(dest))

    def calibrate() -> tuple[float, Path]:
        """(seconds of one run's window, the copy it ran on: what a run that is not killed leaves)."""
        copy = copy_tree(old_bundle, tmp_path / "calibration")
        sums, old_sums = copy / "SHA256SUMS", (copy / "SHA256SUMS").stat().st_ino
        return timed_window([bundle(copy)], tmp_path, writing(copy), lambda: _ino(sums) not in (old_sums, None)), copy

    window, calibration = calibrate()
    new = bundle_state(calibration)
    assert new != old
    print(f"window {window:.2f}s")

    outcomes = []
    for attempt in range(iterations()):
        dest = copy_tree(old_bundle, tmp_path / f"bundle-{attempt}")
        delay = rng.uniform(0, window * OVERSHOOT)
        playbook = first_through_a_play(attempt)
        kill = kill_after([bundle(dest)], tmp_path, writing(dest), delay, replaced(dest / "SHA256SUMS"), playbook)
        now = bundle_state(dest)
        state = "old" if now == old else "new" if now == new else "mixed"
        after_kill, completing, final = complete([info(dest), bundle(dest), info(dest, "full")], tmp_path, playbook)
        completed = not completing.get("failed") and bundle_state(dest) == new and final["bundle"]["verified"]
        left = [p.name for p in bundle_scratch(dest)]
        ok = state != "mixed" and after_kill["bundle"]["verified"] and completed and not left
        record("kill -9 cache_bundle", outcome="previous bundle or the complete new one; next run completes and verifies",
               handled=int(ok), corrupt=int(state == "mixed"), seed=seed, kill=kill.timing)
        outcomes.append(f"{delay:.2f}s ({kill.timing}): {state}")
        context = f"seed {seed}, attempt {attempt}, kill after {delay:.3f}s"
        assert state != "mixed", f"{context}: the bundle is neither the old nor the new one: {now}"
        assert after_kill["bundle"]["verified"], f"{context}: {after_kill.get('problems')}"
        assert completed, f"{context}: {completing.get('msg')}; {final.get('problems')}"
        assert not left, f"{context}: temp files left: {left}"
        shutil.rmtree(dest)
    print("kills: " + "; ".join(outcomes))


# -- cache_install ------------------------------------------------------------------------------------


def many_files(seed: int, count: int = 400) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {f"shards/part-{i:04d}.bin": rng.randbytes(512) for i in range(count)}
    files["weights.bin"] = rng.randbytes(2 * MiB)
    return files


def install(src: Path, cache: Path) -> dict:
    return {"modelseed.fleet.cache_install": {"src": str(src), "cache_dir": str(cache), "layout": "all"}}


def test_kill_cache_install_at_random_moments(tmp_path):
    """Several models with many files, so that kills during staging, between the swaps and while old copies are
    deleted all happen: each model directory is byte for byte (modes, owners, mtimes too) the old or the new one."""
    rng, seed = seeded_rng("kill cache_install")
    ids = [f"kill/model-{i}" for i in range(4)]
    dirs = [model_dir("all", m, "master") for m in ids]
    old = write_bundle(tmp_path / "old", [ModelSpec(m, many_files(i)) for i, m in enumerate(ids)])
    new = write_bundle(tmp_path / "new", [ModelSpec(m, many_files(100 + i), created_at=1710000000) for i, m in enumerate(ids)])
    template = tmp_path / "template"
    assert not run_modules([install(old, template)], tmp_path)[0].get("failed")
    olds = [tree_digest(template / d) for d in dirs]

    def staging(cache: Path):
        return lambda: bytes_below(cache / ".modelseed/incoming") > 0

    def calibrate() -> tuple[float, Path]:
        """(seconds of one run's window, the copy it ran on: what a run that is not killed leaves)."""
        copy = copy_tree(template, tmp_path / "calibration")
        inodes = [(copy / d).stat().st_ino for d in dirs]
        return timed_window([install(new, copy)], tmp_path, staging(copy),
                            lambda: all((copy / d).stat().st_ino != ino for d, ino in zip(dirs, inodes, strict=True))), copy

    window, calibration = calibrate()
    news = [tree_digest(calibration / d) for d in dirs]
    print(f"window {window:.2f}s")

    outcomes = []
    for attempt in range(iterations()):
        cache = copy_tree(template, tmp_path / f"cache-{attempt}")
        delay = rng.uniform(0, window * OVERSHOOT)
        playbook = first_through_a_play(attempt)
        kill = kill_after([install(new, cache)], tmp_path, staging(cache), delay, replaced(*(cache / d for d in dirs)), playbook)
        states = []
        for index, d in enumerate(dirs):
            now = tree_digest(cache / d)
            states.append("old" if now == olds[index] else "new" if now == news[index] else "mixed")
        run = complete([install(new, cache), install(new, cache)], tmp_path, playbook)
        completed = not run[0].get("failed") and [tree_digest(cache / d) for d in dirs] == news and run[1]["changed"] is False
        leftovers = [p for kind in ("incoming", "trash") for p in (cache / ".modelseed" / kind).glob("*")]
        ok = "mixed" not in states and completed and not leftovers
        record("kill -9 cache_install", outcome="each model dir byte for byte old or new; next run completes",
               handled=int(ok), corrupt=states.count("mixed"), seed=seed, kill=kill.timing)
        outcomes.append(f"{delay:.2f}s ({kill.timing}): {' '.join(states)}")
        context = f"seed {seed}, attempt {attempt}, kill after {delay:.3f}s"
        assert "mixed" not in states, f"{context}: {states}"
        assert completed, f"{context}: {run[0].get('msg')} / {run[1].get('msg')}"
        assert not leftovers, f"{context}: {leftovers}"
        shutil.rmtree(cache)
    print("kills: " + "; ".join(outcomes))
