"""Fleet-scale benchmark: a site of N nodes behind rate-limited links, each way of seeding them, N = 2 to 16.

    python tools/bench fleet-scale [--nodes 2 4 8 16] [--runs 3] [--size-mib 256] [--files 4] [--wan-mib 20] [--lan-mib 100]
                                  [--ways cli push pull p2p] [--results FILE] [--fresh]

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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from common import REPO, WORK, write_random_model
from fleet_scale_net import Sampler, check_links
from fleet_scale_report import publish
from fleet_setup import (NODE_CACHE, check_every_node_holds, download_command, environment_files, give_staging_ssh, reset_nodes,
                         seed, shard_bytes, ssh_command)
from support.fleet import new_state_dir, sandbox
from support.fleet.site import Site
from support.sdk import SdkEnv, ensure_sdk
from support.sdk import cache_dir as sdk_cache_dir

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

    @property
    def nodes(self) -> list[str]:
        return [node.name for node in self.site.fleet.nodes if node.index != STAGING]


@dataclass(frozen=True)
class Way:
    """A way to seed the nodes: ``run`` does it on a freshly reset world; ``missing`` says why it cannot run, or None."""
    name: str
    label: str
    run: Callable[[World], None]
    missing: Callable[[], str | None] = lambda: None


def every_node_downloads(world: World) -> None:
    """The status quo: each node fetches the whole model from the hub itself, all at the same time."""
    fleet = world.site.fleet
    remote = download_command(world.sdk.root, world.hub_url, world.model)
    procs = {name: subprocess.Popen([*ssh_command(fleet), f"root@{fleet.node(name).address}", remote], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True) for name in world.nodes}
    for name, proc in procs.items():
        _out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"modelscope download on {name} failed ({proc.returncode}): {err[-3000:]}")


def play(transport: str) -> Callable[[World], None]:
    """seed_models.yml with node1 staging, every node in one batch, forks for all of them at once."""
    def run(world: World) -> None:
        seed(world.site.fleet, inventory(world, transport), "--forks", str(len(world.nodes) + 1))
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
        way.run(world)
        wall = time.monotonic() - started
    check_every_node_holds(site.fleet, world.model, world.shards, way.name, only=world.nodes)
    # Half the WAN rate: what the slowest way (every node from the hub) moves at least, far above Ansible's traffic.
    phase = sampler.transfer_phase(bridge_ends, wan / 2 * 0.1)
    return {"wall": wall, "transfer": phase[1] - phase[0] if phase else None,
            "hub_bytes": site.sent("wan") - hub_before, "staging_bytes": site.sent(f"node{STAGING}") - staging_before}


def config_key(args: argparse.Namespace) -> dict:
    return {"size_mib": args.size_mib, "files": args.files, "wan": args.wan_mib << 20, "lan": args.lan_mib << 20}


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def append(path: Path, row: dict) -> None:
    with path.open("a") as out:
        out.write(json.dumps(row) + "\n")
        out.flush()
        os.fsync(out.fileno())


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
            world = World(site, url, model, model_bytes, shards, sdk, environment_files(site.fleet))
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
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS))
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines, one per cell, read back to resume")
    parser.add_argument("--fresh", action="store_true", help="forget the cells of earlier runs")
    args = parser.parse_args()
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("bwrap", "rsync", "tc", "nsenter")) \
            or not os.path.exists(sandbox.SSHD):
        raise SystemExit("the fleet-scale benchmark needs root, bubblewrap, rsync, iproute2 (tc) and openssh-server (make sysdeps)")
    WORK.mkdir(parents=True, exist_ok=True)
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
