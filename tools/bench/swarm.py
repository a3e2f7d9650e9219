"""Swarm benchmark: the p2p engine alone (aria2 peers, opentracker, the staging nginx as web seed) on a site of N
nodes behind rate-limited links, for each way of keeping the staging host's egress low.

    python tools/bench swarm [--nodes 2 4 8 16] [--runs 1] [--size-mib 256] [--files 4] [--wan-mib 20] [--lan-mib 100]
                             [--mechanisms webseed feeders capped seeder budget] [--staging-mib 40] [--trickle-kib 1024]
                             [--budget 1.5] [--piece-kib 0] [--results FILE] [--fresh]

node1 is the staging host: it holds the exported tree (model files and manifest.json) under nginx's root, runs
opentracker and, for some mechanisms, an aria2 seeder; nodes 2 to N+1 run modelseed.fleet.p2p_peer in their own
namespaces. The transfer phase runs from the start of the peers to the last node's complete download; the staging
egress is what node1's link sent (ip -s link), in copies of the model. Each cell is appended to the results file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import WORK, write_random_model
from cpu_use import cpu_between, snapshot
from fleet_scale_net import check_links
from swarm_report import publish

from support.fleet import new_state_dir
from support.fleet.site import Site
from support.swarm import ModuleRunner, Tracker, WebSeed, aria2_processes, stop_aria2

RESULTS = WORK / "swarm.jsonl"
MODEL_SOURCE = WORK / "swarm-model"
NETNS_PREFIX = "swm"  # of every namespace the site makes: told apart from the tests' (modelseed-*)
NAME = "models"  # the exported tree's directory, the torrent's name
STAGING = 1
EXPORT = "srv/modelseed/export"
INCOMING = "var/cache/modelscope/.incoming"
PEER_STATE = "var/lib/modelseed/p2p"


@dataclass(frozen=True)
class Mechanism:
    """How the staging host feeds the swarm. ``web_seed_rate(total, n)``: nginx's limit per connection (0: none);
    ``seeder_rate``: when set, an aria2 seeder on the staging host uploads at most this (0: no limit)."""
    name: str
    label: str
    web_seed_rate: object
    seeder_rate: object = None
    seeder_ratio: float = 0.0
    feeders: int = 0  # when set, only the first ``feeders`` nodes read the torrent with the web seed


def mechanisms(args: argparse.Namespace) -> dict[str, Mechanism]:
    cap, trickle = args.staging_mib << 20, args.trickle_kib << 10
    return {
        "webseed": Mechanism("webseed", "nginx web seed alone, no limit; one connection per node", lambda n: 0),
        "capped": Mechanism("capped", f"nginx web seed alone, {args.staging_mib} MiB/s split over the N connections (limit_rate)",
                            lambda n: cap // n),
        "seeder": Mechanism("seeder", f"aria2 seeder on the staging host at {args.staging_mib} MiB/s, web seed trickle "
                            f"{args.trickle_kib} KiB/s per connection", lambda n: trickle, lambda n: cap),
        "feeders": Mechanism("feeders", "nginx web seed, no limit, for the first 2 nodes only; the others read the torrent "
                             "without web seeds (the node role's default, node_p2p_web_seed_peers: 2)", lambda n: 0, feeders=2),
        "budget": Mechanism("budget", f"aria2 seeder on the staging host, no rate limit, stops after {args.budget} copies "
                            f"(--seed-ratio); web seed trickle {args.trickle_kib} KiB/s per connection", lambda n: trickle, lambda n: 0,
                            args.budget),
    }


def model_tree(mib: int, files: int) -> tuple[Path, dict]:
    """The exported tree (shards, config, manifest.json with every file's sha256), made once."""
    tree = MODEL_SOURCE / f"{mib}m-{files}" / NAME
    if not (tree / "manifest.json").exists():
        write_random_model(tree, mib, files)
        entries = []
        for path in sorted(p for p in tree.rglob("*") if p.is_file()):
            entries.append({"path": str(path.relative_to(tree)), "size": path.stat().st_size,
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        (tree / "manifest.json").write_text(json.dumps({"files": entries}, indent=1))
    return tree, json.loads((tree / "manifest.json").read_text())


def check_node(root: Path, manifest: dict) -> None:
    """Every file of the manifest on the node, with its sha256."""
    for entry in manifest["files"]:
        path = root / INCOMING / NAME / entry["path"]
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != entry["sha256"]:
            raise SystemExit(f"{path}: sha256 {digest}, the manifest says {entry['sha256']}")


@dataclass
class Staging:
    site: Site
    tracker: Tracker
    torrent: Path
    info_hash: str
    model_bytes: int
    run: ModuleRunner

    @property
    def prefix(self) -> list[str]:
        return node_prefix(self.site, STAGING)

    @property
    def address(self) -> str:
        return self.site.fleet.node(STAGING).address

    @property
    def root(self) -> Path:
        return self.site.fleet.node(STAGING).path


def set_up(site: Site, tree: Path, piece_kib: int) -> Staging:
    fleet = site.fleet
    staging_root = fleet.node(STAGING).path
    export = staging_root / EXPORT
    export.mkdir(parents=True)
    shutil.copytree(tree, export / NAME)
    prefix = ["nsenter", f"--net=/run/netns/{fleet.gap.node(STAGING)}"]
    address = fleet.node(STAGING).address
    tracker = Tracker(prefix, address, staging_root / "var/lib/modelseed/opentracker").start()
    run = ModuleRunner(WORK / "swarm-args")
    torrent = export / f"{NAME}.torrent"
    made = run([], "p2p_torrent", {"path": str(export / NAME), "dest": str(torrent), "tracker": tracker.announce,
                                   "web_seeds": [f"http://{address}:8080/"], "whitelist": str(tracker.whitelist),
                                   "peers_dest": str(peers_torrent(torrent)),
                                   **({"piece_size": piece_kib << 10} if piece_kib else {})})
    tracker.reload()
    print(f"torrent: {made['pieces']} pieces of {made['piece_size'] >> 10} KiB, {made['files']} files", flush=True)
    return Staging(site, tracker, torrent, made["info_hash"], made["bytes"], run)


def peers_torrent(torrent: Path) -> Path:
    """Where p2p_torrent writes the same torrent without web seeds (peers_dest), as the staging role names it."""
    return torrent.with_name(torrent.stem + "-peers.torrent")


def aria2_cpu(pid: int) -> float:
    """CPU seconds (user and system) a running aria2c has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_prefix(site: Site, index: int) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{site.fleet.gap.node(index)}"]


def peer_args(staging: Staging, root: Path, address: str, **extra) -> dict:
    return {"torrent": str(staging.torrent), "dest": str(root / INCOMING), "state_dir": str(root / PEER_STATE),
            "address": address, **extra}


def run_cell(staging: Staging, mechanism: Mechanism, nodes: list[int], manifest: dict) -> dict:
    site, n = staging.site, len(nodes)
    for index in nodes:
        root = site.fleet.node(index).path
        shutil.rmtree(root / INCOMING, ignore_errors=True)
        shutil.rmtree(root / PEER_STATE, ignore_errors=True)
    seed = WebSeed(staging.prefix, staging.address, staging.root / EXPORT, staging.root / "var/lib/modelseed/nginx",
                   limit_rate=mechanism.web_seed_rate(n)).start()
    seeder = None
    try:
        if mechanism.seeder_rate is not None:
            seeder = peer_args(staging, staging.root, staging.address, dest=str(staging.root / EXPORT), seed=True,
                               upload_limit=mechanism.seeder_rate(n), seed_ratio=mechanism.seeder_ratio)
            staging.run(staging.prefix, "p2p_peer", seeder)
        scrape_before = staging.tracker.scrape(staging.info_hash)
        served_before = seed.bytes_served()
        sent_before = {name: site.sent(name) for name in site.links}
        cpu_before = snapshot()
        started = time.monotonic()
        # Beyond the first ``feeders`` nodes, the torrent without web seeds (the same swarm), as the node role does.
        starts = [(node_prefix(site, i), "p2p_peer", peer_args(staging, site.fleet.node(i).path, site.fleet.node(i).address,
                   **({"torrent": str(peers_torrent(staging.torrent))} if 0 < mechanism.feeders <= k else {})))
                  for k, i in enumerate(nodes)]
        threads = [threading.Thread(target=staging.run, args=start) for start in starts]
        for thread in threads:
            thread.start()
        done: dict[int, float] = {}
        while len(done) < n:
            for i in nodes:
                if i not in done and (site.fleet.node(i).path / PEER_STATE / staging.info_hash / "complete").exists():
                    done[i] = time.monotonic()
            if time.monotonic() - started > 900:
                raise SystemExit(f"{mechanism.name}, N={n}: {n - len(done)} nodes not complete after 900 s")
            time.sleep(0.05)
        for thread in threads:
            thread.join()
        transfer = max(done.values()) - started
        cpu_after = snapshot()
        cpu = cpu_between(cpu_before, cpu_after)
        peer_cpu = sum(aria2_cpu(int((site.fleet.node(i).path / PEER_STATE / staging.info_hash / "pid").read_text())) for i in nodes)
        scrape = staging.tracker.wait_for(staging.info_hash, downloaded=scrape_before["downloaded"] + n)
        for i in nodes:
            staging.run(node_prefix(site, i), "p2p_peer", {"state": "stopped", "torrent": str(staging.torrent),
                                                           "state_dir": str(site.fleet.node(i).path / PEER_STATE)})
        if seeder:
            staging.run(staging.prefix, "p2p_peer", {"state": "stopped", "torrent": str(staging.torrent), "state_dir": seeder["state_dir"]})
        scrape_after = staging.tracker.wait_for(staging.info_hash, complete=0, incomplete=0)
    finally:
        seed.stop()
    sent = {name: site.sent(name) - before for name, before in sent_before.items()}
    left = aria2_processes(str(site.fleet.state_dir))
    if left:
        raise SystemExit(f"aria2c still running after the stop: {left}")
    for i in nodes:
        check_node(site.fleet.node(i).path, manifest)
    model = staging.model_bytes
    return {"transfer": transfer, "first": min(done.values()) - started, "staging_copies": sent[f"node{STAGING}"] / model,
            "web_seed_copies": (seed.bytes_served() - served_before) / model, "node_copies": {f"node{i}": sent[f"node{i}"] / model for i in nodes},
            "seeders_seen": scrape["complete"], "completed_events": scrape["downloaded"] - scrape_before["downloaded"],
            "peers_left": scrape_after["complete"] + scrape_after["incomplete"],
            "machine_busy": cpu["busy"], "cpu": cpu, "peer_cpu_seconds": peer_cpu, "load": os.getloadavg()[0]}


def config_of(args: argparse.Namespace) -> dict:
    """What makes two cells comparable: a rerun resumes the cells of the same config, and the report shows only those."""
    return {"size_mib": args.size_mib, "files": args.files, "wan": args.wan_mib << 20, "lan": args.lan_mib << 20,
            "staging_mib": args.staging_mib, "trickle_kib": args.trickle_kib, "piece_kib": args.piece_kib, "budget": args.budget}


def sweep(args: argparse.Namespace, chosen: list[Mechanism]) -> None:
    tree, manifest = model_tree(args.size_mib, args.files)
    config = config_of(args)
    done = {(r["mechanism"], r["nodes"], r["run"]) for r in read_results(args.results) if r.get("config") == config}
    for n in args.nodes:
        todo = [(run, m) for run in range(1, args.runs + 1) for m in chosen if (m.name, n, run) not in done]
        if not todo:
            continue
        site = Site(new_state_dir("swarm-"), n + 1, wan=config["wan"], lan=config["lan"], netns_prefix=NETNS_PREFIX)
        try:
            site.up()
            rates = check_links(site, list(site.links), floor=args.link_floor) if args.link_floor else {}
            print(f"N={n}: links alone (MiB/s in/out): " + ", ".join(f"{k} {v['in'] / 2**20:.0f}/{v['out'] / 2**20:.0f}"
                                                                     for k, v in rates.items()), flush=True)
            staging = set_up(site, tree, args.piece_kib)
            try:
                for run, mechanism in todo:
                    cell = run_cell(staging, mechanism, list(range(2, n + 2)), manifest)
                    row = {"mechanism": mechanism.name, "nodes": n, "run": run, "config": config,
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **cell}
                    with args.results.open("a") as out:
                        out.write(json.dumps(row) + "\n")
                    print(f"N={n} {mechanism.name} run {run}: transfer {cell['transfer']:.1f} s (first {cell['first']:.1f} s), "
                          f"CPU busy {cell['machine_busy']:.0%} (load {cell['load']:.1f}; s: {cpu_line(cell['cpu'])}), "
                          f"peers' CPU {cell['peer_cpu_seconds']:.1f} s, "
                          f"staging {cell['staging_copies']:.2f} copies (web seed {cell['web_seed_copies']:.2f}), "
                          f"tracker: {cell['seeders_seen']} seeders, {cell['completed_events']} completed, {cell['peers_left']} left after the stop",
                          flush=True)
            finally:
                staging.tracker.stop()
        finally:
            stop_aria2(str(site.fleet.state_dir))  # peers a failed cell left behind
            site.down()


def cpu_line(cpu: dict) -> str:
    kinds = ", ".join(f"{k} {v:.1f}" for k, v in cpu["seconds"].items() if k in ("user", "system", "softirq", "irq"))
    return kinds + "; " + ", ".join(f"{k} {v:.1f}" for k, v in list(cpu["processes"].items())[:5])


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--wan-mib", type=int, default=20)
    # 16 nodes at 12 MiB/s each already keep this machine's 2 cores busy (aria2, and the kernel moving the bytes through
    # the shaped veths): at 6 the links, not the machine, bound the swarm up to N=16.
    parser.add_argument("--lan-mib", type=int, default=6)
    parser.add_argument("--staging-mib", type=int, default=40, help="what the staging host may send, all nodes together, MiB/s")
    parser.add_argument("--trickle-kib", type=int, default=1024, help="web seed per connection beside a seeder, KiB/s")
    parser.add_argument("--budget", type=float, default=1.5, help="copies the budget seeder uploads before it stops")
    parser.add_argument("--piece-kib", type=int, default=0, help="piece size; 0: p2p_torrent's choice")
    parser.add_argument("--link-floor", type=float, default=0.85, help="least share of its rate each link must reach alone; 0: no check")
    parser.add_argument("--mechanisms", nargs="+", default=["feeders", "webseed"])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("bwrap", "aria2c", "opentracker", "nginx", "tc")):
        raise SystemExit("the swarm benchmark needs root, bubblewrap, aria2, opentracker, nginx and iproute2 (make sysdeps)")
    WORK.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        args.results.unlink(missing_ok=True)
    table = mechanisms(args)
    chosen = [table[name] for name in args.mechanisms]
    sweep(args, chosen)
    publish(args, config_of(args), chosen, [r for r in read_results(args.results) if r.get("config") == config_of(args)])


if __name__ == "__main__":
    main()
