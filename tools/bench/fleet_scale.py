"""Fleet-scale benchmark: a site of N nodes behind rate-limited links, each way of seeding them, N = 2 to 16.

    python tools/bench fleet-scale [--nodes 2 4 8 16] [--runs 3] [--size-mib 256] [--files 4] [--wan-mib 20] [--lan-mib 100]
                                  [--ways cli push pull p2p] [--play-var KEY=VALUE ...] [--results FILE] [--fresh]

The hub sits in a namespace of its own behind one shared WAN link; the staging host and every node have a LAN
link each (support.fleet.site); node trees are on tmpfs. Each cell (way, N, run) is appended to the results file
as it finishes, and a rerun skips the cells already there (--fresh starts afresh), so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import os
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
from fleet_scale_net import Sampler, check_links
from fleet_scale_report import config_key, publish
from fleet_setup import NODE_CACHE, check_every_node_holds, download_command, environment_files, give_staging_ssh, reset_nodes, seed, shard_bytes, ssh_command

from support.fleet import new_state_dir, sandbox
from support.fleet.site import Site
from support.sdk import SdkEnv, ensure_sdk
from support.sdk import cache_dir as sdk_cache_dir

CALLBACKS = Path(__file__).resolve().parent / "callbacks"
HUB_ROOT = WORK / "fleet-scale-hub"
RESULTS = WORK / "fleet-scale.jsonl"
STAGING = 1  # node1 is the staging host; nodes 2 to N+1 are seeded
STAGING_BUNDLE = "/var/cache/modelseed-staging-bundle"  # under /var/cache: a reset empties it
NODE_SPECS = REPO / "roles" / "node" / "meta" / "argument_specs.yml"


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
    """A way to seed the nodes: ``run`` does it on a freshly reset world and returns when each node had the model
    verified (time.monotonic(), by node name) and anything else worth keeping; ``missing`` says why it cannot run."""
    name: str
    label: str
    run: Callable[[World], tuple[dict[str, float], dict]]
    missing: Callable[[], str | None] = lambda: None


def every_node_downloads(world: World) -> tuple[dict[str, float], dict]:
    """The status quo: each node fetches the whole model from the hub itself, all at the same time; the SDK checks
    each file's sha256 before its session ends."""
    fleet = world.site.fleet
    remote = download_command(world.sdk.root, world.hub_url, world.model)
    procs = {name: subprocess.Popen([*ssh_command(fleet), f"root@{fleet.node(name).address}", remote], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True) for name in world.nodes}
    ended: dict[str, float] = {}
    errors: dict[str, str] = {}

    def wait(name: str, proc: subprocess.Popen) -> None:
        _out, errors[name] = proc.communicate()
        ended[name] = time.monotonic()

    waiters = [threading.Thread(target=wait, args=item) for item in procs.items()]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    for name, proc in procs.items():
        if proc.returncode:
            raise SystemExit(f"modelscope download on {name} failed ({proc.returncode}): {errors[name][-3000:]}")
    return ended, {}


def play(transport: str, verified_by: str = "cache_install") -> Callable[[World], tuple[dict[str, float], dict]]:
    """seed_models.yml with node1 staging, every node in one batch, forks for all of them at once. A node has the
    model verified when its last ``verified_by`` task ends (the module that checks every byte and installs)."""
    def run(world: World) -> tuple[dict[str, float], dict]:
        timeline = WORK / "fleet-scale-timeline.jsonl"
        timeline.unlink(missing_ok=True)
        env = {"ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS), "ANSIBLE_CALLBACKS_ENABLED": "bench_timeline",
               "MODELSEED_BENCH_TIMELINE": str(timeline)}
        extra = [arg for var in world.play_vars for arg in ("-e", var)]
        seed(world.site.fleet, inventory(world, transport), "--forks", str(len(world.nodes) + 1), *extra, env=env)
        tasks = [json.loads(line) for line in timeline.read_text().splitlines()]
        verified: dict[str, float] = {}
        for task in tasks:
            if task["host"] in world.nodes and task["status"] == "ok" and task["action"].endswith(verified_by):
                verified[task["host"]] = max(verified.get(task["host"], 0.0), task["end"])
        # Where a play's time goes: the slowest tasks, each at its slowest host.
        slowest: dict[str, float] = {}
        for task in tasks:
            slowest[task["task"]] = max(slowest.get(task["task"], 0.0), task["end"] - task["start"])
        return verified, {"slowest_tasks": dict(sorted(slowest.items(), key=lambda kv: -kv[1])[:8])}
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
    return directory


def hub_model(mib: int, files: int) -> tuple[str, int, int]:
    """(name, bytes of all its files, bytes of its weight shards) of a model of random shards, written once."""
    name = f"bench/scale-{mib}m-{files}"
    write_random_model(HUB_ROOT / name, mib, files)
    files_bytes = sum(p.stat().st_size for p in (HUB_ROOT / name).iterdir() if p.is_file())
    return name, files_bytes, shard_bytes(HUB_ROOT, name)


def start_hub(site: Site) -> tuple[subprocess.Popen, str]:
    """The test hub in the hub namespace, as a process of its own (its threads then do not compete with the sampler)."""
    proc = subprocess.Popen([*site.hub_prefix, sys.executable, "-m", "support.mshub", "--root", str(HUB_ROOT), "--host", site.hub_address],
                            cwd=REPO / "tests", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        proc.wait()
        raise SystemExit(f"the hub did not start in {site.hub_namespace}")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(world: World, way: Way, wan: int) -> dict:
    """One run of ``way`` from fresh nodes: wall time, transfer phase, and what left the hub and the staging host."""
    reset_nodes(world.site.fleet, world.environments)
    site = world.site
    hub_before, staging_before = site.sent("wan"), site.sent(f"node{STAGING}")
    bridge_ends = [site.links[name].bridge_end for name in world.nodes]
    with Sampler(site) as sampler:
        started = time.monotonic()
        verified, extra = way.run(world)
        wall = time.monotonic() - started
    check_every_node_holds(site.fleet, world.model, world.shards, way.name, only=world.nodes)
    # Half the WAN rate: what the slowest way (every node from the hub) moves at least, far above Ansible's traffic.
    flow = sampler.transfer_phase(bridge_ends, wan / 2 * 0.1)
    complete = flow and set(verified) == set(world.nodes)
    return {"wall": wall, "transfer": max(verified.values()) - flow[0] if complete else None,
            "flow": flow[1] - flow[0] if flow else None, "hub_bytes": site.sent("wan") - hub_before,
            "staging_bytes": site.sent(f"node{STAGING}") - staging_before, **extra}


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def append(path: Path, row: dict) -> None:
    with path.open("a") as out:
        out.write(json.dumps(row) + "\n")
        out.flush()
        os.fsync(out.fileno())


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
    done = {(r["way"], r["nodes"], r["run"]) for r in read_results(args.results) if r.get("kind") == "cell" and r["config"] == config}
    model, model_bytes, shards = hub_model(args.size_mib, args.files)
    sdk = ensure_sdk("1.40.2")
    sdk_cache_dir().mkdir(parents=True, exist_ok=True)
    for n in args.nodes:
        todo = [(run, way) for run in range(1, args.runs + 1) for way in (ways if run % 2 else ways[::-1])
                if (way.name, n, run) not in done]
        if not todo:
            continue
        groups = {"modelscope_staging": [STAGING], "modelscope_nodes": list(range(2, n + 2))}
        site = Site(new_state_dir("scale-"), n + 1, wan=config["wan"], lan=config["lan"], groups=groups, shared=[sdk_cache_dir()])
        hub = None
        try:
            site.up()
            links = check_links(site, list(site.links), floor=args.link_floor)
            append(args.results, {"kind": "links", "nodes": n, "config": config, "rates": links})
            print(f"N={n}: links alone (MiB/s in/out): " + ", ".join(f"{k} {v['in'] / 2**20:.0f}/{v['out'] / 2**20:.0f}"
                                                                     for k, v in links.items()), flush=True)
            give_staging_ssh(site.fleet, STAGING)
            hub, url = start_hub(site)
            world = World(site, url, model, model_bytes, shards, sdk, environment_files(site.fleet), args.play_var)
            for run, way in todo:
                figures = measure(world, way, config["wan"])
                append(args.results, {"kind": "cell", "way": way.name, "nodes": n, "run": run, "config": config,
                                      "model_bytes": model_bytes, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures})
                print(f"N={n} run {run} {way.name}: {figures['wall']:.1f} s, transfer {figures['transfer'] or 0:.1f} s, "
                      f"hub {figures['hub_bytes'] / model_bytes:.2f} copies, staging {figures['staging_bytes'] / model_bytes:.2f} copies",
                      flush=True)
            reset_nodes(site.fleet, world.environments)
        finally:
            if hub:
                stop(hub)
            site.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 4, 8, 16], help="fleet sizes N (nodes seeded, staging host aside)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=4, help="weight shards of the model")
    parser.add_argument("--wan-mib", type=int, default=20, help="the hub's shared link, MiB/s")
    parser.add_argument("--lan-mib", type=int, default=100, help="each node's and the staging host's link, MiB/s")
    parser.add_argument("--link-floor", type=float, default=0.85,
                        help="fraction of its rate a link must reach alone (TCP/IP headers take about 4 percent)")
    parser.add_argument("--play-var", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra variable for the plays (-e), for example staging_poll_interval=1; part of what a cell is")
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS))
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines, one per cell, read back to resume")
    parser.add_argument("--fresh", action="store_true", help="forget the cells of earlier runs")
    args = parser.parse_args()
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("bwrap", "rsync", "tc", "nsenter")) \
            or not os.path.exists(sandbox.SSHD):
        raise SystemExit("the fleet-scale benchmark needs root, bubblewrap, rsync, iproute2 (tc) and openssh-server (make sysdeps)")
    WORK.mkdir(parents=True, exist_ok=True)
    need_memory(args)
    if args.fresh:
        args.results.unlink(missing_ok=True)
    ways = [WAYS[name] for name in args.ways]
    skipped = {way.name: why for way in ways if (why := way.missing())}
    for name, why in skipped.items():
        print(f"{name}: {why}", flush=True)
    sweep(args, [way for way in ways if way.name not in skipped])
    publish(args, ways, skipped, read_results(args.results))


if __name__ == "__main__":
    main()
