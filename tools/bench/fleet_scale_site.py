"""The fleet-scale benchmark's site for one N, with its hub, always taken down again: when the sweep ends, fails,
or is stopped with Ctrl-C, SIGTERM or SIGHUP, and, after a kill that left no chance to clean up, by the next run
from what this one recorded. Only what the benchmark made is removed: its site's namespaces (named ``fsc-<id>-*``)
by the state directory it recorded, and its hub by pid and start time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import REPO, WORK

from support.fleet import down, new_state_dir, sandbox
from support.fleet.site import Site

NETNS_PREFIX = "fsc"  # of every namespace the site makes: told apart from any other on this machine
LEFTOVERS = WORK / "fleet-scale-site.json"  # what a running sweep has made, until it has removed it again
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP stop the sweep as Ctrl-C does, through every ``finally`` on the way out."""
    def interrupt(signum: int, _frame) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in STOP_SIGNALS[1:]:
        signal.signal(signum, interrupt)


@contextmanager
def signals_held() -> Iterator[None]:
    """A second Ctrl-C must not cut the clean-up short: stop signals wait until it is done, then take effect."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def clean_leftovers() -> None:
    """Remove what a sweep killed outright left behind, as it recorded it."""
    if not LEFTOVERS.exists():
        return
    left = json.loads(LEFTOVERS.read_text())
    if sandbox.running(left.get("hub_pid"), left.get("hub_starttime")):
        os.kill(left["hub_pid"], signal.SIGKILL)
    down(left["state_dir"])
    LEFTOVERS.unlink()


def record(**made) -> None:
    tmp = LEFTOVERS.with_suffix(".tmp")
    tmp.write_text(json.dumps(made))
    tmp.replace(LEFTOVERS)


def start_hub(site: Site, root: Path) -> tuple[subprocess.Popen, str]:
    """The test hub in the hub namespace, as a process of its own (its threads then do not compete with the sampler)."""
    proc = subprocess.Popen([*site.hub_prefix, sys.executable, "-m", "support.mshub", "--root", str(root), "--host", site.hub_address],
                            cwd=REPO / "tests", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        stop(proc)
        raise SystemExit(f"the hub did not start in {site.hub_namespace}")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def site_with_hub(size: int, wan: int, lan: int, groups: dict, shared: list[Path], hub_root: Path) -> Iterator[tuple[Site, str]]:
    """A site of ``size`` nodes, node trees on tmpfs, and the hub serving ``hub_root`` behind its WAN link: (site, hub URL)."""
    site = Site(new_state_dir("scale-"), size, wan=wan, lan=lan, groups=groups, shared=shared, netns_prefix=NETNS_PREFIX)
    record(state_dir=str(site.fleet.state_dir))
    hub = None
    try:
        site.up()
        hub, url = start_hub(site, hub_root)
        record(state_dir=str(site.fleet.state_dir), hub_pid=hub.pid, hub_starttime=sandbox.starttime(hub.pid))
        yield site, url
    finally:
        with signals_held():
            if hub:
                stop(hub)
            site.down()
            LEFTOVERS.unlink(missing_ok=True)
