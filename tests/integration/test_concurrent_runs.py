"""Two runs at once on the same cache, and the lock a killed run leaves behind.

Every writer takes an flock (plugins/module_utils/_fs/locks.py): a second run waits for the first, or gives up
after lock_timeout naming the lock file. The kernel drops an flock when its holder dies, so the lock file a
kill -9 leaves is harmless: the next run takes it at once (lock_timeout=0 proves it).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import model_dir
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import state_path
from support.bundles import ModelSpec, spec_from_hub, write_bundle
from support.fleet import Fleet, new_state_dir
from support.interrupt import Background, bytes_below, files_below, spawn, wait_until
from support.judging import judge
from support.mshub import MsHub
from support.playbook import ANSIBLE_PLAYBOOK, ansible_env, run_tasks
from support.reliability import record
from support.sample_models import MODEL, model_files

pytestmark = pytest.mark.hostile

MiB = 1 << 20
MODEL_REL = model_dir("all", MODEL, "master")
SDK = "1.40.2"  # reads the `all` layout over plain http


@pytest.fixture
def slow_hub(hub_root):
    """The sample model on a hub of this test's own, each weights file sent at 2 MiB/s: a download takes seconds."""
    with MsHub(hub_root, redirect_threshold=MiB) as server:
        server.faults.add(action="throttle", file="weights/*", rate=2 * MiB)
        yield server


def download(hub, cache: Path, **options) -> dict:
    return {"modelseed.fleet.modelscope_model": {"name": MODEL, "cache_dir": str(cache), "endpoint": hub.url, "layout": "all", **options}}


def install(src: Path, cache: Path, **options) -> dict:
    return {"modelseed.fleet.cache_install": {"src": str(src), "cache_dir": str(cache), "layout": "all", **options}}


def both_finish(first: Background, second: Background) -> tuple[dict, dict, bool]:
    """Wait for two runs; their results, and whether they really overlapped (both alive at one moment after starting)."""
    overlapped = first.proc.poll() is None and second.proc.poll() is None
    first.wait()
    second.wait()
    return first.results()[0], second.results()[0], overlapped


def test_two_downloads_at_once_fetch_each_file_once(slow_hub, tmp_path, sdk, tls):
    cache = tmp_path / "cache"
    mark = len(slow_hub.log)
    task = download(slow_hub, cache)
    runs = [spawn([task], tmp_path), spawn([task], tmp_path)]
    wait_until(lambda: bytes_below(cache / ".modelseed/partial") > 0 or bytes_below(cache / ".modelseed/incoming") > 0, runs[0].proc)
    first, second, overlapped = both_finish(*runs)
    fetched = slow_hub.log.downloads(mark)
    once = fetched == {path: 1 for path, data in model_files().items() if data}
    failed = [r["msg"] for r in (first, second) if r.get("failed")]
    record("two modelscope_model runs at once", outcome="one waits for the other; each file fetched once; cache complete",
           handled=int(overlapped and once and not failed))
    assert overlapped, "the runs did not overlap"
    assert not failed, failed
    assert once, f"files fetched more than once: {fetched}"
    assert sorted([first["bytes_downloaded"], second["bytes_downloaded"]]) == [0, sum(map(len, model_files().values()))]
    slow_hub.faults.clear()
    judge(sdk(SDK), cache, slow_hub, tls)


def test_a_download_gives_up_waiting_naming_the_lock(slow_hub, tmp_path, sdk, tls):
    cache = tmp_path / "cache"
    slow_hub.faults.clear()
    # The holder keeps its lock until the waiter has returned, however slowly the machine starts the waiter's play:
    # its weights come at 32 KiB/s (minutes) until the throttle is lifted.
    throttle = slow_hub.faults.add(action="throttle", file="weights/*", rate=32 << 10)
    holder = spawn([download(slow_hub, cache)], tmp_path)
    assert wait_until(lambda: bytes_below(cache / ".modelseed/partial") > 0, holder.proc), "the first run never got going"
    waiter = run_tasks([download(slow_hub, cache, lock_timeout=1)])[0]
    holder_ran_throughout = holder.proc.poll() is None
    throttle.rate = 0
    holder.wait()
    held = holder.results()[0]
    lock = state_path(str(cache), "locks", MODEL_REL, ".lock")
    clear = bool(waiter.get("failed")) and lock in waiter["msg"] and "locked by another run" in waiter["msg"]
    record("modelscope_model while another run holds the lock", outcome="fails after lock_timeout naming the lock; the holder completes",
           handled=int(clear and not held.get("failed")))
    assert clear, waiter.get("msg")
    assert holder_ran_throughout, "the holder ended before the waiter returned: the waiter did not give up on the lock"
    assert not held.get("failed"), held["msg"]
    slow_hub.faults.clear()
    judge(sdk(SDK), cache, slow_hub, tls)


def many_files(seed: int, count: int = 600) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {f"shards/part-{i:04d}.bin": rng.randbytes(512) for i in range(count)}
    files["weights.bin"] = rng.randbytes(4 * MiB)
    return files


def test_two_installs_at_once_install_once(hub, tmp_path, sdk, tls):
    """Many files make the install take a while; the second run waits, then finds the model installed."""
    bundle = write_bundle(tmp_path / "bundle", [spec_from_hub(hub.url, MODEL, model_files()),
                                                ModelSpec("o/many", many_files(1))])
    cache = tmp_path / "cache"
    task = install(bundle, cache)
    runs = [spawn([task], tmp_path), spawn([task], tmp_path)]
    wait_until(lambda: bytes_below(cache / ".modelseed/incoming") > 0, runs[0].proc)
    first, second, overlapped = both_finish(*runs)
    actions = sorted([[m["action"] for m in first.get("models", [])], [m["action"] for m in second.get("models", [])]])
    failed = [r["msg"] for r in (first, second) if r.get("failed")]
    leftovers = [p for kind in ("incoming", "trash") for p in files_below(cache / ".modelseed" / kind)]
    ok = overlapped and not failed and actions == [["install", "install"], ["none", "none"]] and not leftovers
    record("two cache_install runs at once", outcome="one waits for the other and installs nothing; cache complete", handled=int(ok))
    assert overlapped, "the runs did not overlap"
    assert not failed, failed
    assert actions == [["install", "install"], ["none", "none"]], actions
    assert not leftovers, leftovers
    judge(sdk(SDK), cache, hub, tls)


def test_an_install_gives_up_waiting_naming_the_lock(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [ModelSpec("o/many", many_files(2))])
    cache = tmp_path / "cache"
    lock = Path(state_path(str(cache), "locks", model_dir("all", "o/many", "master"), ".lock"))
    lock.parent.mkdir(parents=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another writer, as far as the module can tell
        result = run_tasks([install(bundle, cache, lock_timeout=1)])[0]
    clear = bool(result.get("failed")) and str(lock) in result["msg"] and "locked by another run" in result["msg"]
    record("cache_install while another run holds the lock", outcome="fails after lock_timeout naming the lock; nothing written",
           handled=int(clear and not (cache / "models/o").exists()))
    assert clear, result.get("msg")
    assert not (cache / "models/o").exists()
    assert not run_tasks([install(bundle, cache, lock_timeout=0)])[0].get("failed")


def test_two_installs_at_once_on_a_fleet_node(hub, tmp_path, sdk, tls):
    """The same through sshd: two ansible-playbook runs push the same bundle to one node at the same time."""
    bundle = write_bundle(tmp_path / "bundle", [spec_from_hub(hub.url, MODEL, model_files()), ModelSpec("o/many", many_files(4))])
    with Fleet(new_state_dir("concurrent-"), 1, shared=[bundle]) as fleet:
        node_cache = "/var/cache/modelscope"
        play = [{"hosts": "all", "gather_facts": False, "tasks": [
            {**install(bundle, Path(node_cache)), "register": "outcome", "ignore_errors": True},
            {"ansible.builtin.copy": {"content": "{{ outcome | to_json }}", "dest": "{{ results_file }}", "mode": "0600"},
             "delegate_to": "localhost", "vars": {"ansible_python_interpreter": sys.executable, "ansible_connection": "local"}}]}]
        playbook = tmp_path / "fleet-install.yml"
        playbook.write_text(yaml.safe_dump(play, sort_keys=False))
        results = [tmp_path / f"fleet-result-{i}.json" for i in range(2)]
        procs = [subprocess.Popen([*fleet.command_prefix, ANSIBLE_PLAYBOOK, "-i", str(fleet.inventory_path), str(playbook),
                                   "-e", f"results_file={result}"], env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for result in results]
        cache = fleet.node(1).path / node_cache.lstrip("/")
        wait_until(lambda: bytes_below(cache / ".modelseed/incoming") > 0, procs[0])
        overlapped = all(proc.poll() is None for proc in procs)
        outputs = [proc.communicate(timeout=600)[0] for proc in procs]
        outcomes = [json.loads(result.read_text()) if result.exists() else {"failed": True, "msg": output[-3000:]}
                    for result, output in zip(results, outputs, strict=True)]
        actions = sorted([m["action"] for m in outcome.get("models", [])] for outcome in outcomes)
        failed = [outcome["msg"] for outcome in outcomes if outcome.get("failed")]
        ok = overlapped and not failed and actions == [["install", "install"], ["none", "none"]]
        record("two cache_install runs at once over ssh", outcome="one waits for the other and installs nothing; cache complete",
               handled=int(ok))
        assert overlapped, "the runs did not overlap"
        assert not failed, failed
        assert actions == [["install", "install"], ["none", "none"]], actions
        judge(sdk(SDK), cache, hub, tls)


# -- a lock left by a killed run -----------------------------------------------------------------------


def lock_held(lock: Path) -> bool:
    """Whether another process holds the flock on ``lock`` now (probed without waiting)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the flock, had the probe got it
    return False


def stale_lock_case(kind: str, tmp_path: Path, hub) -> tuple[dict, Path]:
    """The task of one module and the lock file it takes."""
    cache = tmp_path / "cache"
    if kind == "modelscope_model":
        return download(hub, cache), Path(state_path(str(cache), "locks", MODEL_REL, ".lock"))
    if kind == "cache_install":
        bundle = write_bundle(tmp_path / "bundle", [ModelSpec("o/many", many_files(3, count=2000))])
        return install(bundle, cache), Path(state_path(str(cache), "locks", model_dir("all", "o/many", "master"), ".lock"))
    hub.faults.clear()
    seeded = run_tasks([download(hub, cache)])[0]
    assert not seeded.get("failed"), seeded["msg"]
    dest = tmp_path / "bundle"
    return {"modelseed.fleet.cache_bundle": {"cache_dir": str(cache), "dest": str(dest)}}, tmp_path / ".bundle.lock"


@pytest.mark.parametrize("kind", ["modelscope_model", "cache_install", "cache_bundle"])
def test_a_lock_left_by_a_killed_run_does_not_block(kind, slow_hub, tmp_path):
    """kill -9 the run while it holds its lock: the lock file stays, and the next run takes it without waiting."""
    task, lock = stale_lock_case(kind, tmp_path, slow_hub)
    victim = spawn([task], tmp_path)
    caught = wait_until(lambda: lock_held(lock), victim.proc, step=0.002)
    victim.kill()
    left = lock.exists()
    next(iter(task.values()))["lock_timeout"] = 0  # any wait fails: the lock must be free at once
    slow_hub.faults.clear()
    run = run_tasks([task, task])
    done = not run[0].get("failed") and run[1]["changed"] is False
    record(f"stale lock of a killed {kind}", outcome="the next run takes the lock at once and completes",
           handled=int(caught and left and done))
    assert caught, "the run ended before it was seen holding its lock"
    assert left, f"{lock} is gone: nothing stale was left to test"
    assert done, [r.get("msg") for r in run.results]
