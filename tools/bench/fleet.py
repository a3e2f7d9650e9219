"""Fleet benchmark: seed_models.yml seeding real-sshd nodes, against every node running `modelscope download`
and against ansible.builtin.copy of the model directory; then no-op re-runs with a big and a small model.

    python tools/bench/fleet.py [--runs 3] [--nodes 4] [--size-mib 1024] [--files 4] [--noop-big-mib 4096] [--noop-small-mib 4]
                                [--noop-nodes 1 2 4]

The no-op runs of the small model are repeated on the first 1, 2, ... nodes (--limit): what a run with nothing to
do costs per node, apart from what it costs once.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from common import REPORT, WORK, drop_tree, machine, overlap, write_random_model, write_section
from fleet_setup import NODE_CACHE, changed_hosts, check_every_node_holds, environment_files, inventory, reset_nodes, run_playbook, seed, start_fleet

from support.fleet import Fleet, sandbox
from support.mshub import MsHub
from support.sdk import SdkEnv, ensure_sdk

HUB_ROOT = WORK / "fleet-hub"
SEED = "`seed_models.yml`: staging on the controller, rsync push"
CLI = "every node runs `modelscope download` (SDK 1.40.2)"
COPY = "`ansible.builtin.copy` of the model directory"


@dataclass
class World:
    fleet: Fleet
    hub: MsHub
    sdk: SdkEnv
    environments: dict[str, bytes]


def hub_model(mib: int, files: int) -> str:
    """A model of random shards on the hub, written once; its name says its size."""
    name = f"bench/fleet-{mib}m-{files}"
    write_random_model(HUB_ROOT / name, mib, files)
    return name


def shard_total(model: str) -> int:
    return sum(p.stat().st_size for p in (HUB_ROOT / model).glob("model-*.safetensors"))


def timed(world: World, action) -> tuple[float, int]:
    """(seconds, bytes the hub served) of ``action()``."""
    mark = len(world.hub.log)
    started = time.monotonic()
    action()
    return time.monotonic() - started, world.hub.log.bytes_served(mark)


def ours(world: World, inventory_dir: Path) -> tuple[float, int]:
    reset_nodes(world.fleet, world.environments)
    return timed(world, lambda: seed(world.fleet, inventory_dir))


def every_node_downloads(world: World, model: str) -> tuple[float, int]:
    """The status quo: each node fetches the whole model from the hub itself, all at the same time."""
    reset_nodes(world.fleet, world.environments)
    fleet = world.fleet
    env = world.sdk.env_for(world.hub, NODE_CACHE, home="/root")
    # Through the venv's python: the console script's shebang names the directory the venv was built in.
    remote = shlex.join(["env", "-i", *(f"{k}={v}" for k, v in env.items()), str(world.sdk.python),
                         str(world.sdk.root / "bin" / "modelscope"), "download", "--model", model, "--cache_dir", NODE_CACHE])
    ssh = [*fleet.command_prefix, "ssh", "-i", str(fleet.key), "-o", f"UserKnownHostsFile={fleet.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]

    def download_everywhere() -> None:
        procs = [subprocess.Popen([*ssh, f"root@{node.address}", remote], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for node in fleet.nodes]
        for node, proc in zip(fleet.nodes, procs, strict=True):
            _out, err = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"modelscope download on {node.name} failed ({proc.returncode}): {err[-3000:]}")

    return timed(world, download_everywhere)


def copy_from_controller(world: World, model: str) -> tuple[float, int]:
    """The naive Ansible way: the copy module, the model directory on the controller, every node."""
    reset_nodes(world.fleet, world.environments)
    playbook = WORK / "fleet-copy.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Copy the model directory to every node", "hosts": "modelscope_nodes", "gather_facts": False,
        "tasks": [{"name": "Copy", "ansible.builtin.copy": {"src": f"{HUB_ROOT / model}/", "dest": f"{NODE_CACHE}/{model}/"}}],
    }], sort_keys=False))
    return timed(world, lambda: run_playbook(world.fleet, world.fleet.inventory_path, playbook))


def need_disk(args: argparse.Namespace) -> None:
    """The hub's models, plus the larger peak of the two scenarios: staging cache, bundle, and every node's cache
    with the pushed tars beside it until its install is done (the no-op scenario seeds one node at a time)."""
    first = args.size_mib * (2 + 2 * args.nodes)
    noop = args.noop_big_mib * (3 + args.nodes)
    mib = args.size_mib + args.noop_big_mib + args.noop_small_mib + max(first, noop)
    free = shutil.disk_usage(WORK).free
    if free < mib << 20:
        raise SystemExit(f"the fleet benchmark needs about {mib / 1024:.1f} GiB free in {WORK}, there are {free / 2**30:.1f} GiB")


def first_runs(world: World, model: str, runs: int) -> dict[str, list[tuple[float, int]]]:
    """Each way from fresh nodes, ``runs`` times, the order alternating."""
    shards = shard_total(model)
    seed_inventory = inventory(world.fleet, "first", model, world.hub.url, world.sdk.python)
    ways = [(SEED, lambda: ours(world, seed_inventory)), (CLI, lambda: every_node_downloads(world, model)),
            (COPY, lambda: copy_from_controller(world, model))]
    results: dict[str, list[tuple[float, int]]] = {name: [] for name, _way in ways}
    for run in range(runs):
        for name, way in ways if run % 2 == 0 else ways[::-1]:
            results[name].append(way())
            check_every_node_holds(world.fleet, model, shards, name)
            print(f"run {run + 1}/{runs} {name}: {results[name][-1][0]:.2f} s, hub served {results[name][-1][1]} bytes", flush=True)
    reset_nodes(world.fleet, world.environments)
    return results


def noop_by_nodes(world: World, inventory_dir: Path, counts: list[int], runs: int) -> dict[int, list[float]]:
    """No-op runs on the first ``n`` nodes only (the staging host stays in), the counts alternating in order."""
    times: dict[int, list[float]] = {n: [] for n in counts}
    for run in range(runs):
        for n in counts if run % 2 == 0 else counts[::-1]:
            limit = ",".join(["localhost"] + [node.name for node in world.fleet.nodes[:n]])
            started = time.monotonic()
            proc = seed(world.fleet, inventory_dir, "--limit", limit)
            times[n].append(time.monotonic() - started)
            if changed_hosts(proc):
                raise SystemExit(f"the no-op run on {n} node(s) changed {changed_hosts(proc)}")
            print(f"no-op run {run + 1}/{runs} on {n} node(s): {times[n][-1]:.2f} s", flush=True)
    return times


def slope(times: dict[int, list[float]]) -> float:
    """Seconds per node: the least-squares line through the medians."""
    xs, ys = list(times), [statistics.median(t) for t in times.values()]
    return statistics.linear_regression(xs, ys).slope if len(xs) > 1 else float("nan")


def noop_runs(world: World, models: dict[str, str], runs: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seed each model once, then run seed_models.yml again and again: nothing may change, the hub serves nothing."""
    reset_nodes(world.fleet, world.environments)
    inventories = {label: inventory(world.fleet, label, model, world.hub.url, world.sdk.python) for label, model in models.items()}
    setup = {}
    for label, inventory_dir in inventories.items():
        # One node at a time: a node holds the pushed tars beside the installed copy until its install is done.
        setup[label] = timed(world, lambda d=inventory_dir: seed(world.fleet, d, "-e", "modelseed_serial=1"))[0]
        check_every_node_holds(world.fleet, models[label], shard_total(models[label]), f"seeding {label}")
    times: dict[str, list[float]] = {label: [] for label in models}
    labels = list(models)
    for run in range(runs):
        for label in labels if run % 2 == 0 else labels[::-1]:
            mark = len(world.hub.log)
            started = time.monotonic()
            proc = seed(world.fleet, inventories[label])
            times[label].append(time.monotonic() - started)
            if changed_hosts(proc) or world.hub.log.downloads(mark):
                raise SystemExit(f"the run again with {label} changed {changed_hosts(proc)} and downloaded {world.hub.log.downloads(mark)}")
            print(f"no-op run {run + 1}/{runs} {label}: {times[label][-1]:.2f} s", flush=True)
    return times, setup


def machine_details() -> str:
    ram = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    df = subprocess.run(["df", "--output=source,fstype,size", "-h", str(WORK)], capture_output=True, text=True, check=True)
    source, fstype, size = df.stdout.splitlines()[-1].split()
    # Other work on the machine shows in every figure: say how busy it was.
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{machine()}, {ram / 2**20:.0f} GiB RAM, disk {source} ({fstype}, {size}), load average {load} (1/5/15 min) at the end"


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def report(first: dict[str, list[tuple[float, int]]], noop: dict[str, list[float]], setup: dict[str, float],
           by_nodes: dict[int, list[float]], args: argparse.Namespace, total: int) -> str:
    rows = []
    for name, results in first.items():
        seconds, served = [r[0] for r in results], [r[1] for r in results]
        copies = statistics.median(served) / total
        hub = f"{statistics.median(served) / 2**20:.0f} MiB ({copies:.2f} copies)" if served[0] else "none (the controller's copy)"
        rows.append(f"| {name} | {statistics.median(seconds):.2f} | {spread(seconds)} | {hub} | {', '.join(f'{s:.2f}' for s in seconds)} |")
    sizes = {"big": args.noop_big_mib, "small": args.noop_small_mib}
    noop_rows = [f"| {sizes[label]} MiB | {statistics.median(times):.2f} | {spread(times)} | {setup[label]:.2f} | {', '.join(f'{s:.2f}' for s in times)} |"
                 for label, times in noop.items()]
    seed_times = [r[0] for r in first[SEED]]
    apart = [name for name in first if name != SEED and not overlap(seed_times, [r[0] for r in first[name]])]
    together = [name for name in first if name != SEED and name not in apart]
    spreads = (f"The spread of `seed_models.yml` does not overlap those of: {', '.join(apart) or 'none'}; "
               f"it overlaps (not distinguishable): {', '.join(together) or 'none'}.")
    first_median = statistics.median(seed_times)
    noop_floor = statistics.median(noop["small"])
    table = "\n".join(rows)
    noop_table = "\n".join(noop_rows)
    nodes_table = "\n".join(f"| {n} | {statistics.median(t):.2f} | {spread(t)} | {', '.join(f'{s:.2f}' for s in t)} |"
                            for n, t in by_nodes.items())
    return f"""## Seeding a fleet

{args.nodes} nodes, each a real sshd in a bubblewrap sandbox on this machine's loopback with its tree on disk;
the loopback test hub; a {args.size_mib} MiB model in {args.files} shards of random bytes plus a config file.
Every run starts from fresh nodes (empty caches, no environment files) and an empty staging cache;
{args.runs} runs, the order alternating; medians, the spread (min-max) and every run.

- `seed_models.yml`: the controller stages (downloads, checking every byte's sha256, and bundles), rsync
  pushes the bundle over ssh to every node at once, each node installs it (hashing every file, fsync before
  rename), sets MODELSCOPE_CACHE and proves that the real SDK 1.40.2 loads the model offline.
- Status quo: every node runs the SDK's own `modelscope download` against the hub, all at the same time,
  over ssh (no fsync, no readiness proof).
- Naive Ansible: a play with `ansible.builtin.copy` of the model directory (`src: dir/`) from the
  controller to every node.

Hub bytes are what the hub's request log says it served; one copy is {total / 2**20:.0f} MiB of weights.

| way | median s | spread s | hub served (median) | runs (s) |
|---|---|---|---|---|
{table}

{spreads}

Running `seed_models.yml` again with everything in place (the second run of each model, nothing to
download, bundle, push or install; only sizes and times recorded at install are compared, nothing is
re-hashed; the SDK still proves readiness on every node). The first run of each model was done one node
at a time (`modelseed_serial=1`, for disk space), so it is shown for scale only. A run with nothing to do
costs what the play itself costs; the {args.size_mib} MiB first run above took {first_median - noop_floor:+.2f} s more
than that (the {args.noop_small_mib} MiB median): the part that depends on the data.

| model | median s | spread s | first run, one node at a time (s) | runs (s) |
|---|---|---|---|---|
{noop_table}

The same no-op run of the {args.noop_small_mib} MiB model on the first nodes only (`--limit`, the staging host
included), {args.runs} runs of each count: the line through the medians rises {slope(by_nodes):.2f} s per node; the rest
is what a run costs once (the staging half and the fleet report). See docs/scaling.md.

| nodes | median s | spread s | runs (s) |
|---|---|---|---|
{nodes_table}

Method: `python tools/bench/fleet.py --runs {args.runs} --nodes {args.nodes} --size-mib {args.size_mib} --files {args.files}
--noop-big-mib {args.noop_big_mib} --noop-small-mib {args.noop_small_mib} --noop-nodes {' '.join(map(str, args.noop_nodes))}`; wall time of the whole
ansible-playbook (or of all the ssh sessions) as the controller sees it. The page cache is not dropped
between runs, so the hub reads its files from memory. Machine: {machine_details()}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=1024, help="the model of the first runs")
    parser.add_argument("--files", type=int, default=4, help="weight shards of each model")
    parser.add_argument("--noop-big-mib", type=int, default=4096)
    parser.add_argument("--noop-small-mib", type=int, default=4)
    parser.add_argument("--noop-nodes", type=int, nargs="+", default=[1, 2, 4], help="node counts of the no-op runs by size")
    args = parser.parse_args()
    if not all(0 < n <= args.nodes for n in args.noop_nodes):
        raise SystemExit(f"--noop-nodes: every count between 1 and --nodes ({args.nodes})")
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("bwrap", "rsync")) \
            or not os.path.exists(sandbox.SSHD):
        raise SystemExit("the fleet benchmark needs root, bubblewrap, rsync and openssh-server (make sysdeps)")
    WORK.mkdir(parents=True, exist_ok=True)
    need_disk(args)
    model = hub_model(args.size_mib, args.files)
    total = shard_total(model)
    noop_models = {"big": hub_model(args.noop_big_mib, args.files), "small": hub_model(args.noop_small_mib, args.files)}
    sdk = ensure_sdk("1.40.2")
    try:
        with MsHub(HUB_ROOT) as hub:
            fleet = start_fleet(args.nodes)
            try:
                world = World(fleet, hub, sdk, environment_files(fleet))
                first = first_runs(world, model, args.runs)
                noop, setup = noop_runs(world, noop_models, args.runs)
                small = inventory(fleet, "small", noop_models["small"], hub.url, sdk.python)
                by_nodes = noop_by_nodes(world, small, args.noop_nodes, args.runs)
                reset_nodes(world.fleet, world.environments)
            finally:
                fleet.down()
    finally:
        drop_tree(HUB_ROOT)  # gigabytes of random bytes, quicker to write again than to keep
    write_section("fleet", report(first, noop, setup, by_nodes, args, total))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
