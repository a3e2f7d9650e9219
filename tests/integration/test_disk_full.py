"""A full disk while modelscope_model downloads: up front (the listing does not fit) and during the transfer
(another writer takes the room). The install side is in test_cache_install.py (up-front check, filling up while
staging); the bundle side here. Each time: a clear error with the numbers, the cache byte for byte as it was,
no partial, staged or temp file left."""

from __future__ import annotations

import random
import threading

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import model_dir
from support.interrupt import bundle_scratch, bytes_below, files_below, tree_digest, wait_until
from support.module_process import run_modules
from support.mshub import MsHub, make_repo, push_commit
from support.playbook import run_tasks
from support.reliability import record
from support.smallfs import fill

pytestmark = pytest.mark.hostile

MiB = 1 << 20
REPO_ID = "full/m"
REL = model_dir("models", REPO_ID, "master")
OLD = {"weights/a.bin": random.Random(1).randbytes(2 * MiB), "config.json": b'{"v": 1}'}


def download(hub, cache) -> dict:
    options = {"name": REPO_ID, "cache_dir": str(cache), "endpoint": hub.url, "layout": "models", "workers": 2, "retries": 0}
    return {"modelseed.fleet.modelscope_model": options}


def scratch(cache) -> list[str]:
    """Files in the scratch areas of the cache, where nothing may stay after a failed run."""
    return [str(p) for kind in ("partial", "incoming", "progress") for p in files_below(cache / ".modelseed" / kind)]


@pytest.fixture
def seeded(tmp_path, small_fs):
    """A hub with REPO_ID, and a cache on the small filesystem holding its first commit."""
    root = tmp_path / "hub"
    make_repo(root, REPO_ID, OLD, versioned=True)
    cache = small_fs / "cache"
    with MsHub(root, redirect_threshold=None) as hub:
        assert not run_modules([download(hub, cache)], tmp_path)[0].get("failed")
        yield hub, root, cache


def test_download_that_cannot_fit_fails_first_with_the_numbers(seeded, small_fs):
    hub, root, cache = seeded
    push_commit(root, REPO_ID, {"weights/huge.bin": random.Random(2).randbytes(24 * MiB)})
    before = tree_digest(cache)
    mark = len(hub.log)
    result = run_tasks([download(hub, cache)])[0]
    message = result.get("msg", "")
    ok = bool(result.get("failed")) and "bytes needed" in message and "bytes free" in message and tree_digest(cache) == before
    record("disk full: download larger than the free space", outcome="fails before writing, with needed and free bytes; cache unchanged",
           handled=int(ok and not scratch(cache)), corrupt=int(tree_digest(cache) != before))
    assert result.get("failed") and "not enough space" in message, message
    assert f"{24 * MiB} bytes needed" in message and "bytes free" in message and str(cache) in message, message
    assert hub.log.downloads(mark) == {}, "fetched although it could not fit"
    assert tree_digest(cache) == before and not scratch(cache)


def test_disk_filling_up_during_the_download(seeded, small_fs):
    """Room at the check; another writer takes it once the transfer runs: the download fails naming the bytes it
    still needed and the bytes free, removes its partial files, and the cache is as it was; later it completes."""
    hub, root, cache = seeded
    new = {"weights/b.bin": random.Random(3).randbytes(10 * MiB), "config.json": b'{"v": 2}'}
    push_commit(root, REPO_ID, new)
    before = tree_digest(cache)
    hub.faults.add(action="throttle", file="weights/b.bin", rate=4 * MiB)
    filler = small_fs / "filler"
    partial = cache / ".modelseed/partial"
    outcome = {}
    finished = threading.Event()

    def fill_once_downloading():
        if wait_until(lambda: bytes_below(partial) > 0 or finished.is_set(), timeout=120) and not finished.is_set():
            outcome["error"] = fill(filler)

    filling = threading.Thread(target=fill_once_downloading)
    filling.start()
    result = run_tasks([download(hub, cache)])[0]
    finished.set()
    filling.join()
    filler.unlink(missing_ok=True)
    message = result.get("msg", "")
    left = scratch(cache)
    intact = tree_digest(cache) == before
    ok = bool(result.get("failed")) and "bytes needed" in message and "bytes free" in message and intact and not left
    record("disk full: filesystem fills during the download", outcome="fails with needed and free bytes; partial files removed; cache unchanged",
           handled=int(ok), corrupt=int(not intact))
    assert "error" in outcome, f"the filler never ran: {message}"
    assert result.get("failed") and "No space left on device" in message, message
    assert "bytes needed" in message and "bytes free" in message, message
    assert intact, "the cache changed"
    assert not left, f"left behind: {left}"
    hub.faults.clear()
    again = run_tasks([download(hub, cache)])[0]
    assert not again.get("failed"), again["msg"]
    assert (cache / REL / "weights/b.bin").read_bytes() == new["weights/b.bin"]


def fill_once_writing(dest, filler, finished: threading.Event, outcome: dict) -> None:
    """Fill the filesystem as soon as a new tar has bytes, unless the run ``finished`` first."""
    def writing() -> bool:
        return finished.is_set() or sum(bytes_below(p) for p in bundle_scratch(dest)) > 0

    if wait_until(writing, timeout=120, step=0.001) and not finished.is_set():
        outcome["error"] = fill(filler)


def test_disk_filling_up_while_writing_a_bundle(tmp_path, small_fs):
    """The bundle directory on the small filesystem; another writer takes the room once the new tar is being written:
    a clear error with the numbers, the previous bundle byte for byte, no temp tar left.

    Writing a tar takes milliseconds: when the run wins the race, its bundle must be the complete new one
    (cache_info verifies it), and the test tries again with another commit."""
    root, cache, dest = tmp_path / "hub", tmp_path / "cache", small_fs / "bundle"
    make_repo(root, REPO_ID, {"weights/a.bin": random.Random(4).randbytes(6 * MiB), "config.json": b'{"v": 1}'}, versioned=True)
    bundle = {"modelseed.fleet.cache_bundle": {"cache_dir": str(cache), "dest": str(dest)}}
    verify = {"modelseed.fleet.cache_info": {"bundle": str(dest), "verify": "full"}}
    filler = small_fs / "filler"
    with MsHub(root) as hub:
        assert not any(r.get("failed") for r in run_modules([download(hub, cache), bundle], tmp_path))
        for attempt in range(10):
            push_commit(root, REPO_ID, {"weights/a.bin": random.Random(5 + attempt).randbytes(8 * MiB)})
            assert not run_modules([download(hub, cache)], tmp_path)[0].get("failed")
            before = tree_digest(dest)
            outcome = {}
            finished = threading.Event()
            filling = threading.Thread(target=fill_once_writing, args=(dest, filler, finished, outcome))
            filling.start()
            result = run_tasks([bundle])[0]
            finished.set()
            filling.join()
            filler.unlink(missing_ok=True)
            if not result.get("failed"):
                checked = run_tasks([verify])[0]
                assert checked["bundle"]["verified"], f"a run that was not stopped left a bundle that does not verify: {checked}"
                continue
            break
        else:
            pytest.fail("the filesystem never filled up while a tar was being written")
    message = result.get("msg", "")
    temps = [p.name for p in bundle_scratch(dest)]
    intact = tree_digest(dest) == before
    ok = "bytes needed" in message and "bytes free" in message and intact and not temps
    record("disk full: filesystem fills while writing a bundle", outcome="fails with needed and free bytes; temp tar removed; bundle unchanged",
           handled=int(ok), corrupt=int(not intact))
    assert "error" in outcome, f"the filler never ran: {message}"
    assert "No space left on device" in message, message
    assert "bytes needed" in message and "bytes free" in message, message
    assert intact, "the previous bundle changed"
    assert not temps, f"left behind: {temps}"
    again = run_tasks([bundle, verify])
    assert not again[0].get("failed") and again[1]["bundle"]["verified"], again[0].get("msg")
