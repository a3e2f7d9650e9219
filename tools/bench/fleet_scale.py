"""Fleet-scale benchmark: a site of N nodes behind rate-limited links, each way of seeding them, N = 2 to 16.

    python tools/bench fleet-scale [--nodes 2 4 8 16] [--runs 3] [--size-mib 256] [--files 4] [--wan-mib 20] [--lan-mib 100]
                                  [--web-seed-mib 40] [--ways cli push pull p2p] [--play-var KEY=VALUE ...] [--results FILE] [--fresh]

The hub sits in a namespace of its own behind one shared WAN link; the staging host and every node have a LAN
link each (support.fleet.site); node trees are on tmpfs. Each cell (way, N, run) is appended to the results file
as it finishes, and a rerun skips the cells already there (--fresh starts afresh), so an interrupted sweep resumes.
A way that fails on a site is recorded with its reason (retried by the next run) and the other ways go on. The
site is taken down on the way out, Ctrl-C included (fleet_scale_site).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from common import REPO, WORK, write_random_model
from fleet_scale_arrivals import Arrivals
from fleet_scale_cells import append, config_key, done, parse_args, plan, read_results, repair
from fleet_scale_net import Sampler, check_links
from fleet_scale_report import publish
from fleet_scale_site import clean_leftovers, interrupt_on_signals, site_with_hub
from fleet_setup import NODE_CACHE, download_command, environment_files, give_staging_ssh, reset_nodes, seed, shard_bytes, ssh_command

from support.fleet import sandbox
from support.fleet.site import Site
from support.sdk import SdkEnv, ensure_sdk
from support.sdk import cache_dir as sdk_cache_dir

CALLBACKS = Path(__file__).resolve().parent / "callbacks"
HUB_ROOT = WORK / "fleet-scale-hub"
RESULTS = WORK / "fleet-scale.jsonl"
STAGING = 1  # node1 is the staging host; nodes 2 to N+1 are seeded
STAGING_BUNDLE = "/var/cache/modelseed-staging-bundle"  # under /var/cache: a reset empties it
NODE_SPECS = REPO / "roles" / "node" / "meta" / "argument_specs.yml"
SHARED = (Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve())  # this Python, for the staging host of p2p, wherever the checkout is


@dataclass
class World:
    """One site (N nodes and the staging host), its hub, the model, and what a run needs."""
    site: Site
    hub_url: str
    model: str
    model_bytes: int
    shards: int
    sdk: SdkEnv
    environments: dict[str, bytes]
    play_vars: list[str]

    @property
    def nodes(self) -> list[str]:
        return [node.name for node in self.site.fleet.nodes if node.index != STAGING]


@dataclass(frozen=True)
class Way:
    """A way to seed the nodes: ``run`` does it on a freshly reset world and returns anything worth keeping beside
    the figures; ``missing`` says why it cannot run."""
    name: str
    label: str
    run: Callable[[World], dict]
    missing: Callable[[], str | None] = lambda: None


def every_node_downloads(world: World) -> dict:
    """The status quo: each node fetches the whole model from the hub itself, all at the same time; the SDK checks
    each file's sha256 before it moves the file into the cache."""
    fleet = world.site.fleet
    remote = download_command(world.sdk.root, world.hub_url, world.model)
    procs: dict[str, subprocess.Popen] = {}
    errors: dict[str, str] = {}
    try:
        for name in world.nodes:
            procs[name] = subprocess.Popen([*ssh_command(fleet), f"root@{fleet.node(name).address}", remote],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        waiters = [threading.Thread(target=lambda n, p: errors.__setitem__(n, p.communicate()[1]), args=item) for item in procs.items()]
        for waiter in waiters:
            waiter.start()
        for waiter in waiters:
            waiter.join()
    finally:
        for proc in procs.values():  # interrupted: no ssh session outlives the run
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        if proc.returncode:
            raise SystemExit(f"modelscope download on {name} failed ({proc.returncode}): {errors.get(name, '')[-3000:]}")
    return {}


def play(transport: str) -> Callable[[World], dict]:
    """seed_models.yml with node1 staging, every node in one batch, forks for all of them at once."""
    def run(world: World) -> dict:
        timeline = WORK / "fleet-scale-timeline.jsonl"
        timeline.unlink(missing_ok=True)
        env = {"ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS), "ANSIBLE_CALLBACKS_ENABLED": "bench_timeline",
               "MODELSEED_BENCH_TIMELINE": str(timeline)}
        extra = [arg for var in world.play_vars for arg in ("-e", var)]
        seed(world.site.fleet, inventory(world, transport), "--forks", str(len(world.nodes) + 1), *extra, env=env)
        # Where a play's time goes: the slowest tasks, each at its slowest host, and each play's span.
        tasks = [json.loads(line) for line in timeline.read_text().splitlines()]
        slowest: dict[str, float] = {}
        spans: dict[str, list[float]] = {}
        for task in tasks:
            slowest[task["task"]] = max(slowest.get(task["task"], 0.0), task["end"] - task["start"])
            span = spans.setdefault(task.get("play", ""), [task["start"], task["end"]])
            span[:] = [min(span[0], task["start"]), max(span[1], task["end"])]
        return {"slowest_tasks": dict(sorted(slowest.items(), key=lambda kv: -kv[1])[:8]),
                "play_seconds": {play: round(end - start, 1) for play, (start, end) in spans.items()},
                "tasks_run": len(tasks)}
    return run


def transport_missing(transport: str) -> Callable[[], str | None]:
    """A transport the node role does not accept (its argument spec) cannot be measured yet."""
    def missing() -> str | None:
        specs = yaml.safe_load(NODE_SPECS.read_text())
        choices = specs["argument_specs"]["main"]["options"]["node_transport"].get("choices", [])
        return None if transport in choices else f"not available: transport {transport} not implemented"
    return missing


WAYS = {
    "cli": Way("cli", "every node runs `modelscope download` against the hub (SDK 1.40.2)", every_node_downloads),
    "push": Way("push", "`seed_models.yml`, push: the staging host rsyncs the bundle to every node", play("push")),
    "pull": Way("pull", "`seed_models.yml`, pull: every node fetches the bundle from the staging host's nginx", play("pull")),
    "p2p": Way("p2p", "`seed_models.yml`, p2p: nodes share the bundle among themselves", play("p2p"), transport_missing("p2p")),
}


def inventory(world: World, transport: str) -> Path:
    """The site's hosts (node1 in modelscope_staging) and the settings, in a directory of their own per transport."""
    directory = WORK / f"fleet-scale-inventory-{transport}"
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "group_vars").mkdir(parents=True)
    shutil.copy(world.site.fleet.inventory_path, directory / "hosts.yml")
    settings = {
        "modelseed_models": [{"name": world.model}],
        "modelseed_cache_dir": NODE_CACHE,
        "modelseed_bundle_dir": STAGING_BUNDLE,
        "modelseed_transport": transport,
        "modelseed_endpoint": world.hub_url,
        "modelseed_sdk_pythons": [str(world.sdk.python)],
        "node_install_sync": True,  # data sync on: fsync before each rename, whatever the default becomes
        "modelseed_report_path": str(WORK / f"fleet-scale-report-{transport}.json"),
    }
    (directory / "group_vars" / "all.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
    if transport == "p2p":
        # The staging host makes the torrent with torf, which this Python has and the nodes' /usr/bin/python3 lacks
        # (the nodes see this Python's installation and virtualenv: SHARED).
        (directory / "host_vars").mkdir()
        # Named through the virtualenv's real directory: a checkout whose .venv is a link to another one's is not
        # mounted in the nodes.
        python = Path(sys.prefix).resolve() / "bin" / Path(sys.executable).name
        (directory / "host_vars" / f"node{STAGING}.yml").write_text(yaml.safe_dump({"ansible_python_interpreter": str(python)}))
    return directory


def hub_model(mib: int, files: int) -> tuple[str, int, int]:
    """(name, bytes of all its files, bytes of its weight shards) of a model of random shards, written once."""
    name = f"bench/scale-{mib}m-{files}"
    write_random_model(HUB_ROOT / name, mib, files)
    files_bytes = sum(p.stat().st_size for p in (HUB_ROOT / name).iterdir() if p.is_file())
    return name, files_bytes, shard_bytes(HUB_ROOT, name)


def measure(world: World, way: Way, wan: int) -> dict:
    """One run of ``way`` from fresh nodes: wall time, transfer phase, and what left the hub and the staging host."""
    reset_nodes(world.site.fleet, world.environments)
    site = world.site
    hub_before, staging_before = site.sent("wan"), site.sent(f"node{STAGING}")
    bridge_ends = [site.links[name].bridge_end for name in world.nodes]
    caches = {name: site.fleet.node(name).path / NODE_CACHE.lstrip("/") for name in world.nodes}
    with Sampler(site) as sampler, Arrivals(caches, world.model, world.shards) as arrivals:
        started = time.monotonic()
        extra = way.run(world)
        wall = time.monotonic() - started
    # In the cache, where the SDK looks: whatever else a transport keeps on a node is not what counts.
    if lacking := sorted(set(world.nodes) - set(arrivals.seen)):
        raise SystemExit(f"{way.name}: {', '.join(lacking)} do not hold {world.model}'s weights in {NODE_CACHE} after the run")
    # Half the WAN rate: what the slowest way (every node from the hub) moves at least, far above Ansible's traffic.
    flow = sampler.transfer_phase(bridge_ends, wan / 2 * 0.1)
    return {"wall": wall, "transfer": max(arrivals.seen.values()) - flow[0] if flow else None,
            "flow": flow[1] - flow[0] if flow else None, "hub_bytes": site.sent("wan") - hub_before,
            "staging_bytes": site.sent(f"node{STAGING}") - staging_before, **extra}


def failure_reason(text: str) -> str:
    """The first error message a failed run gave (a failed task's msg, an unreachable host, an Ansible error), else its
    first line."""
    found = re.search(r'(?:FAILED|UNREACHABLE)! => \{.*?"msg": "((?:[^"\\]|\\.)*)"', text) \
        or re.search(r"^(?:ERROR!|\[ERROR\]:) (.*)$", text, re.MULTILINE)
    return (found.group(1) if found else text.strip().splitlines()[0] if text.strip() else "no message")[:400]


def need_memory(args: argparse.Namespace) -> None:
    """Node trees live on tmpfs: at the largest N each node may hold the pushed tars beside the installed copy, and the
    staging host its cache and the bundle."""
    mib = args.size_mib * (2 * max(args.nodes) + 2)
    available = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable:"))
    if available << 10 < mib << 20:
        raise SystemExit(f"the fleet-scale benchmark needs about {mib / 1024:.1f} GiB of memory for tmpfs, {available / 2**20:.1f} GiB are available")


def sweep(args: argparse.Namespace, ways: list[Way]) -> None:
    """Every cell not in the results file yet, one site per N; each cell is appended as it finishes."""
    config = config_key(args)
    todo = plan([way.name for way in ways], args.nodes, args.runs, done(read_results(args.results), config))
    if not todo:
        return
    model, model_bytes, shards = hub_model(args.size_mib, args.files)
    sdk = ensure_sdk("1.40.2")
    sdk_cache_dir().mkdir(parents=True, exist_ok=True)
    for n, cells in todo.items():
        groups = {"modelscope_staging": [STAGING], "modelscope_nodes": list(range(2, n + 2))}
        with site_with_hub(n + 1, config["wan"], config["lan"], groups, [sdk_cache_dir(), *SHARED], HUB_ROOT) as (site, url):
            links = check_links(site, list(site.links), floor=args.link_floor)
            append(args.results, {"kind": "links", "nodes": n, "config": config, "rates": links})
            print(f"N={n}: links alone (MiB/s in/out): " + ", ".join(f"{k} {v['in'] / 2**20:.0f}/{v['out'] / 2**20:.0f}"
                                                                     for k, v in links.items()), flush=True)
            give_staging_ssh(site.fleet, STAGING)
            # The web seed's cap is the site's setting of the p2p transport; push and pull do not read it.
            play_vars = [f"staging_p2p_web_seed_rate={config['web_seed']}", *args.play_var]
            world = World(site, url, model, model_bytes, shards, sdk, environment_files(site.fleet), play_vars)
            failed: set[str] = set()
            for run, name in cells:
                if name in failed:
                    continue
                try:
                    figures = measure(world, WAYS[name], config["wan"])
                except SystemExit as failure:  # the way failed on this site: keep why, measure the other ways
                    failed.add(name)
                    append(args.results, {"kind": "failure", "way": name, "nodes": n, "run": run, "config": config,
                                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "reason": failure_reason(str(failure))})
                    print(f"N={n} run {run} {name}: FAILED: {failure_reason(str(failure))}", flush=True)
                    continue
                append(args.results, {"kind": "cell", "way": name, "nodes": n, "run": run, "config": config,
                                      "model_bytes": model_bytes, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                      "load": os.getloadavg()[0], **figures})
                print(f"N={n} run {run} {name}: {figures['wall']:.1f} s, transfer {figures['transfer'] or 0:.1f} s, "
                      f"hub {figures['hub_bytes'] / model_bytes:.2f} copies, staging {figures['staging_bytes'] / model_bytes:.2f} copies",
                      flush=True)


def main() -> None:
    args = parse_args(sys.argv[1:], RESULTS)
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("bwrap", "rsync", "tc", "nsenter")) \
            or not os.path.exists(sandbox.SSHD):
        raise SystemExit("the fleet-scale benchmark needs root, bubblewrap, rsync, iproute2 (tc) and openssh-server (make sysdeps)")
    WORK.mkdir(parents=True, exist_ok=True)
    need_memory(args)
    interrupt_on_signals()
    clean_leftovers()
    if args.fresh:
        args.results.unlink(missing_ok=True)
    repair(args.results)
    ways = [WAYS[name] for name in args.ways]
    skipped = {way.name: why for way in ways if (why := way.missing())}
    for name, why in skipped.items():
        print(f"{name}: {why}", flush=True)
    try:
        sweep(args, [way for way in ways if way.name not in skipped])
    except KeyboardInterrupt as stopped:
        raise SystemExit(f"stopped ({str(stopped) or 'Ctrl-C'}); the site is down, the cells that finished are in {args.results}: "
                         "run the same command again to resume") from None
    publish(args, ways, skipped, read_results(args.results))


if __name__ == "__main__":
    main()
