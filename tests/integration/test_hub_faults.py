"""modelscope_model against a hub that misbehaves, and cache_install against a bundle server that does.

Transient faults must end in a complete download with the published bytes; permanent ones in a failure
whose message names the model and the file. Either way no file under its final name, in the SDK
metadata or in a record may differ from what the hub published. Every injection is counted in the
reliability tally (``support.reliability``); looped cases repeat ``iterations()`` times with a
printed seed.
"""

from __future__ import annotations

import hashlib
import random
import shutil

import pytest

from support import reliability
from support.bundles import ModelSpec, write_bundle
from support.cache_audit import audit_cache, hub_versions, tree_digest
from support.fileserver import FileServer
from support.module_process import run_module
from support.mshub import MsHub, make_repo, push_commit
from support.playbook import run_tasks

pytestmark = pytest.mark.hostile

MODEL = "Faulty/Tiny-1.5B"
BIG = "weights/model.safetensors"  # above the redirect threshold: its body comes from object storage
COMPLETES = "completes with the published bytes"
FAILS = "fails naming model and file; nothing unverified kept"


def published(seed: int = 3) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "config.json": b'{"model_type": "qwen2"}',
        "tokenizer.json": rng.randbytes(300_000),
        BIG: rng.randbytes((2 << 20) + 11),
        "nested/extra.bin": rng.randbytes(70_000),
        "empty.txt": b"",
    }


FILES = published()
NONEMPTY = sorted(path for path, data in FILES.items() if data)


@pytest.fixture
def hub(tmp_path):
    """A hub of its own per test: faults and pushes never reach another test."""
    root = tmp_path / "hub"
    make_repo(root, MODEL, FILES, versioned=True)
    with MsHub(root, redirect_threshold=1 << 20) as server:
        yield server


def run(module: str, args: dict, workdir, playbook: bool) -> dict:
    """One run of ``module``: through ansible-playbook, or as the module process Ansible would start (the iterations
    of a fault class after its first, which went through a play: the fault is the hub's, not ansible-playbook's)."""
    if playbook:
        return run_tasks([{f"modelseed.fleet.{module}": args}])[0]
    return run_module(module, args, workdir)


# retry_delay 0: faults strike per request, so waiting between retries proves nothing (a Retry-After is still waited for).
def download(hub, cache, playbook: bool = True, **options) -> dict:
    args = {"name": MODEL, "cache_dir": str(cache), "endpoint": hub.url, "layout": "all", "retries": 2, "retry_delay": 0, "timeout": 10,
            **options}
    return run("modelscope_model", args, cache.parent, playbook)


def completed(hub, result, cache, files: dict | None = None) -> tuple[bool, list[str]]:
    """(ended as it must, problems found in the cache) for a fault the download has to get over; the cache is
    audited against every commit the hub published, per-file revisions included."""
    files = FILES if files is None else files
    bad = audit_cache(cache, MODEL, *hub_versions(hub, MODEL))
    model_dir = result.get("path")
    whole = bool(model_dir) and all(_read(f"{model_dir}/{rel}") == data for rel, data in files.items())
    return not result.get("failed") and whole and not bad, bad


def failed_clearly(hub, result, cache, file: str | None) -> tuple[bool, list[str]]:
    """(ended as it must, problems found in the cache) for a fault the download cannot get over."""
    bad = audit_cache(cache, MODEL, *hub_versions(hub, MODEL))
    msg = result.get("msg", "")
    named = MODEL in msg and (file is None or file in msg)
    return bool(result.get("failed")) and named and not bad, bad


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def looped(case: str, fault: str, outcome: str, run_once, runs: int | None = None) -> None:
    """Run ``run_once(rng, index) -> (ok, problems, details)`` ``runs`` (default ``iterations()``) times; record each, then assert.

    Iteration 0 runs its module through ansible-playbook, the others as module processes (``first_through_a_play``)."""
    rng, seed = reliability.seeded_rng(case)
    for index in range(runs or reliability.iterations()):
        ok, problems, details = run_once(rng, index)
        reliability.record(fault, outcome=outcome, handled=int(ok), corrupt=len(problems), seed=seed)
        assert ok and not problems, f"iteration {index} (MODELSEED_SEED={seed}): {details} {problems}"


# -- transient faults: the download completes ---------------------------------------------------


def nth_file(index: int) -> str:
    """Files in turn, so that a few iterations strike each one, the redirected one too."""
    return NONEMPTY[index % len(NONEMPTY)]


def first_through_a_play(index: int) -> bool:
    """One playbook run per fault class, its first iteration: the rest start the module without ansible-playbook."""
    return index == 0


def recovers(hub, cache, index, *fault_specs, **options):
    """Inject ``fault_specs``, download (iteration ``index``), take the faults back: (completed, problems, faults, result)."""
    faults = [hub.faults.add(**spec) for spec in fault_specs]
    result = download(hub, cache, first_through_a_play(index), **options)
    hub.faults.clear()
    ok, problems = completed(hub, result, cache)
    return ok, problems, faults, result


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_on_a_file_is_retried(hub, tmp_path, status):
    def once(rng, index):
        file, times = nth_file(index), rng.randint(1, 2)
        ok, problems, (fault,), result = recovers(hub, tmp_path / f"c{index}", index, dict(action="status", status=status, file=file, times=times))
        return ok and fault.hits == times, problems, (file, times, fault.hits, result.get("msg"))

    looped(f"http-{status}", f"hub: HTTP {status}", COMPLETES, once)


def test_503_on_the_api_is_retried(hub, tmp_path):
    def once(rng, index):
        where = rng.choice(["/revisions", "/repo/files"])
        ok, problems, (fault,), result = recovers(hub, tmp_path / f"c{index}", index, dict(action="status", status=503, path=where, times=1))
        return ok and fault.hits == 1, problems, (where, result.get("msg"))

    looped("api-503", "hub: HTTP 503 on the API", COMPLETES, once)


def test_429_waits_for_retry_after(hub, tmp_path):
    def once(rng, index):
        file, mark = nth_file(index), len(hub.log)
        ok, problems, (fault,), result = recovers(hub, tmp_path / f"c{index}", index, dict(action="status", status=429, retry_after=1, file=file, times=1))
        asked = [r for r in hub.log.entries(mark) if r.file == file and "/oss/" not in r.path]
        waited = len(asked) >= 2 and asked[0].status == 429 and asked[1].at - asked[0].at >= 0.9
        return ok and waited and fault.hits == 1, problems, (file, [(r.status, round(r.at, 2)) for r in asked], result.get("msg"))

    looped("http-429", "hub: HTTP 429 with Retry-After", COMPLETES, once)


@pytest.mark.parametrize("action", ["reset", "truncate"])
def test_body_cut_mid_file_resumes(hub, tmp_path, action):
    def once(rng, index):
        file, mark = nth_file(index), len(hub.log)
        cut = rng.randrange(1, len(FILES[file]))
        ok, problems, (fault,), result = recovers(hub, tmp_path / f"c{index}", index, dict(action=action, file=file, after_bytes=cut, times=1))
        bodies = [r for r in hub.log.entries(mark) if r.file == file and r.download]
        # A clean close delivers every byte sent, so the resume starts right there; a reset may drop some in flight.
        resumed_at = {f"bytes={cut}-"} if action == "truncate" else {None, *(f"bytes={n}-" for n in range(1, cut + 1))}
        resumed = len(bodies) == 2 and bodies[0].sent == cut and bodies[1].range in resumed_at
        return ok and resumed and fault.hits == 1, problems, (file, cut, [(r.range, r.sent) for r in bodies], result.get("msg"))

    fault = "hub: reset mid-body" if action == "reset" else "hub: body cut short"
    looped(f"body-{action}", fault, COMPLETES, once)


@pytest.mark.parametrize("spec, fault_name", [
    ({"action": "empty", "times": 1}, "hub: zero-byte 200 body"),
    ({"action": "redirect_loop", "times": 3}, "hub: redirect loop (short)"),
], ids=["empty-200", "redirect-loop"])
def test_fault_that_stops_is_got_over(hub, tmp_path, spec, fault_name):
    def once(rng, index):
        file = nth_file(index)
        ok, problems, (fault,), result = recovers(hub, tmp_path / f"c{index}", index, dict(spec, file=file))
        return ok and fault.hits == spec["times"], problems, (file, result.get("msg"))

    looped(f"stops-{spec['action']}", fault_name, COMPLETES, once)


def test_slow_responses(hub, tmp_path):
    """Headers later than the timeout: retried. A slow but steady body: waited for."""
    def once(rng, index):
        late = dict(action="delay", file=nth_file(index), delay=2.5, times=1)
        slow = dict(action="throttle", file=rng.choice(NONEMPTY), rate=1 << 20)
        ok, problems, faults, result = recovers(hub, tmp_path / f"c{index}", index, late, slow, timeout=1)
        return ok and faults[0].hits == 1 and faults[1].hits >= 1, problems, (late, slow, result.get("msg"))

    looped("slow", "hub: very slow response", COMPLETES, once)


def test_push_during_the_download_keeps_one_commit(hub, tmp_path):
    """Master moves between the resolve and the listing, and again mid-download: every file is from the first commit."""
    def once(rng, index):
        first = hub.store.repo(*MODEL.split("/")).resolve("master")
        changed = {rng.choice(NONEMPTY): f"new {index}".encode(), f"added-{index}.txt": b"added"}
        trigger = rng.choice([{"path": "/repo/files"}, {"file": rng.choice(NONEMPTY)}])
        fault = hub.faults.add(action="push", model=MODEL, files=changed, times=1, **trigger)
        cache = tmp_path / f"c{index}"
        result = download(hub, cache, first_through_a_play(index))
        hub.faults.clear()
        ok, bad = completed(hub, result, cache, expected_files.get(first, FILES))
        # The next run sees the new commit and fetches only what changed.
        newest = hub.store.repo(*MODEL.split("/")).resolve("master")
        expected_files[newest] = {**expected_files.get(first, FILES), **changed}
        again = download(hub, cache, playbook=False)
        ok_again, bad_again = completed(hub, again, cache, expected_files[newest])
        fetched_only_changes = sorted(again.get("files_downloaded", [])) == sorted(changed)
        return (ok and ok_again and fault.hits == 1 and result.get("commit") == first and again.get("commit") == newest
                and fetched_only_changes), bad + bad_again, (trigger, result.get("msg"), again.get("msg"))

    expected_files: dict[str, dict[str, bytes]] = {}
    looped("push", "hub: new revision pushed mid-download", COMPLETES, once)


def test_real_sdk_loads_offline_what_survived_a_reset(hub, tmp_path, sdk):
    cache = tmp_path / "cache"
    fault = hub.faults.add(action="reset", file=BIG, after_bytes=1 << 20, times=1)
    result = download(hub, cache)
    offline = sdk("1.40.2").snapshot(MODEL, cache, hub, local_files_only=True)
    found = {path: info["sha256"] for path, info in offline.files.items() if not path.startswith(".m")} if offline.ok else {}
    want = {path: hashlib.sha256(data).hexdigest() for path, data in FILES.items()}
    ok, bad = completed(hub, result, cache)
    handled = ok and fault.hits == 1 and found == want
    reliability.record("hub: reset mid-body, judged by the SDK", outcome="SDK 1.40.2 loads every file offline", handled=int(handled),
                       corrupt=len(bad))
    assert handled and not bad, (result.get("msg"), offline.error, found)


# -- permanent faults: the download fails clearly -----------------------------------------------


def permanent(hub, cache, index, file, fault_args, **options):
    """Inject a fault that never stops (iteration ``index``); the run must fail clearly and leave nothing unverified."""
    fault = hub.faults.add(file=file, **fault_args)
    result = download(hub, cache, first_through_a_play(index), **options)
    hub.faults.clear()
    ok, bad = failed_clearly(hub, result, cache, file)
    return ok and fault.hits >= 1, bad, (file, result.get("msg"))


@pytest.mark.parametrize("fault_args, fault_name, options", [
    ({"action": "status", "status": 500}, "hub: HTTP 500 (persistent)", {"retries": 1}),
    ({"action": "status", "status": 503, "retry_after": 0}, "hub: HTTP 503 (persistent)", {"retries": 2}),
    ({"action": "empty"}, "hub: zero-byte 200 body (persistent)", {"retries": 1}),
    ({"action": "truncate", "after_bytes": 1000}, "hub: body cut short (persistent)", {"retries": 0}),
    ({"action": "wrong_sha"}, "hub: wrong sha256 in the listing", {}),
    ({"action": "redirect_loop"}, "hub: redirect loop", {}),
    ({"action": "delay", "delay": 3.0}, "hub: very slow response (persistent)", {"retries": 1, "timeout": 1}),
], ids=["500", "503", "empty", "truncate", "wrong-sha", "redirect-loop", "slow"])
def test_permanent_fault_fails_naming_the_file(hub, tmp_path, fault_args, fault_name, options):
    """Once on each file the fault can strike: the outcome depends on nothing random."""
    files = [path for path in NONEMPTY if len(FILES[path]) > fault_args.get("after_bytes", 0)]

    def once(rng, index):
        return permanent(hub, tmp_path / f"c{index}", index, files[index], fault_args, **options)

    looped(f"permanent-{fault_name}", fault_name, FAILS, once, runs=len(files))


def test_failure_on_an_update_keeps_the_old_files(hub, tmp_path):
    """A model already in the cache, a new commit whose download fails: the old verified files stay, nothing new half-lands."""
    cache = tmp_path / "cache"
    assert not download(hub, cache).get("failed")
    scratch = (".modelseed/locks", ".modelseed/incoming", ".modelseed/partial")
    before = tree_digest(cache, skip=scratch)
    changed = {BIG: b"x" * ((1 << 20) + 5), "tokenizer.json": b"new tokenizer"}
    push_commit(hub.store.root, MODEL, changed)
    fault = hub.faults.add(action="wrong_sha", file=BIG)
    result = download(hub, cache)
    hub.faults.clear()
    ok, bad = failed_clearly(hub, result, cache, BIG)
    after = tree_digest(cache, skip=scratch)
    handled = ok and fault.hits == 1 and after == before
    reliability.record("hub: wrong sha256 in the listing, on an update", outcome="fails; the old model stays as it was",
                       handled=int(handled), corrupt=len(bad))
    assert handled and not bad, (result.get("msg"), set(after.items()) ^ set(before.items()), bad)


# -- cache_install pulling a bundle from a URL ---------------------------------------------------


BUNDLE_MODEL = "Faulty/Bundled"
BUNDLE_DIR = "models/Faulty/Bundled"


def install(src, cache, playbook: bool = True, **options) -> dict:
    args = {"src": str(src), "cache_dir": str(cache), "layout": "models", "retries": 2, "retry_delay": 0, "timeout": 10, **options}
    return run("cache_install", args, cache.parent, playbook)


@pytest.fixture
def bundles(tmp_path):
    """An old bundle installed from a directory, and a new one published over HTTP."""
    old = dict(FILES)
    new = {**FILES, BIG: FILES[BIG][::-1], "added.bin": b"a" * 5000}
    old_dir = write_bundle(tmp_path / "old", [ModelSpec(BUNDLE_MODEL, old)])
    new_dir = write_bundle(tmp_path / "new", [ModelSpec(BUNDLE_MODEL, new)])
    return old_dir, new_dir, old, new


# A silent connection costs the whole timeout: a short one keeps the loop quick.
SILENT = {"timeout": 3}


@pytest.mark.parametrize("fault_args, fault_name, options", [
    ({"action": "reset"}, "bundle URL: reset mid-tar", {}),
    ({"action": "truncate"}, "bundle URL: tar cut short", {}),
    ({"action": "status", "status": 503}, "bundle URL: HTTP 503", {}),
    ({"action": "stall"}, "bundle URL: connection silent mid-tar", SILENT),
], ids=["reset", "truncate", "503", "stall"])
def test_bundle_pull_survives_a_transient_fault(tmp_path, bundles, fault_args, fault_name, options):
    old_dir, new_dir, old, new = bundles
    tar_size = next(new_dir.glob("*.tar")).stat().st_size
    installed = tmp_path / "installed"
    assert not install(old_dir, installed).get("failed")

    def once(rng, index):
        cache = tmp_path / f"c{index}"
        shutil.copytree(installed, cache, symlinks=True)  # mtimes kept: the records still match
        with FileServer(new_dir) as server:
            fault = server.faults.add(file="*.tar", times=1, after_bytes=rng.randrange(1, tar_size), **fault_args)
            result = install(server.url, cache, first_through_a_play(index), **options)
        bad = audit_cache(cache, BUNDLE_MODEL, new)
        ok = not result.get("failed") and fault.hits == 1 and all(
            _read(f"{cache}/{BUNDLE_DIR}/{rel}") == data for rel, data in new.items())
        return ok, bad, (fault.after_bytes, result.get("msg"))

    looped(f"bundle-{fault_args['action']}", fault_name, COMPLETES, once)


@pytest.mark.parametrize("fault_args, fault_name, options", [
    ({"action": "reset", "after_bytes": 200_000}, "bundle URL: reset mid-tar (persistent)", {}),
    ({"action": "status", "status": 503, "retry_after": 0}, "bundle URL: HTTP 503 (persistent)", {}),
    ({"action": "stall", "after_bytes": 200_000}, "bundle URL: connection silent mid-tar (persistent)", SILENT),
], ids=["reset", "503", "stall"])
def test_bundle_pull_that_keeps_failing_leaves_the_cache_unchanged(tmp_path, bundles, fault_args, fault_name, options):
    old_dir, new_dir, old, new = bundles
    cache = tmp_path / "cache"
    assert not install(old_dir, cache).get("failed")
    before = tree_digest(cache, skip=(".modelseed/locks",))
    with FileServer(new_dir) as server:
        fault = server.faults.add(file="*.tar", **fault_args)
        result = install(server.url, cache, **{"retries": 1, **options})
    after = tree_digest(cache, skip=(".modelseed/locks",))
    bad = audit_cache(cache, BUNDLE_MODEL, old)
    msg = result.get("msg", "")
    handled = bool(result.get("failed")) and "cannot fetch the bundle" in msg and ".tar" in msg and after == before and fault.hits >= 1
    reliability.record(fault_name, outcome="fails clearly; the cache unchanged", handled=int(handled), corrupt=len(bad))
    assert handled and not bad, (msg, set(after.items()) ^ set(before.items()), bad)
