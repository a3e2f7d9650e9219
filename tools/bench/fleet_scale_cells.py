"""What a fleet-scale sweep is: its arguments, its cells (way, N, run), and the results file that lets an interrupted
sweep resume. Standard library only, so that it is cheap to test."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

WAY_NAMES = ("cli", "push", "pull", "p2p")
FULL_SIZES = (2, 4, 8, 16)
FULL_RUNS = 3
MAX_NODES = 249  # a fleet has at most 250 nodes, and one of them is the staging host


def parser(results: Path) -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="python tools/bench fleet-scale",
                                    description="A site of N nodes behind rate-limited links, each way of seeding them.")
    parse.add_argument("--nodes", type=int, nargs="+", default=list(FULL_SIZES), help="fleet sizes N (nodes seeded, staging host aside)")
    parse.add_argument("--runs", type=int, default=FULL_RUNS, help="runs per cell")
    parse.add_argument("--size-mib", type=int, default=256)
    parse.add_argument("--files", type=int, default=4, help="weight shards of the model")
    parse.add_argument("--wan-mib", type=int, default=20, help="the hub's shared link, MiB/s")
    parse.add_argument("--lan-mib", type=int, default=100, help="each node's and the staging host's link, MiB/s")
    parse.add_argument("--web-seed-mib", type=int, default=40,
                       help="p2p: what the staging host's web seed sends in all, MiB/s (staging_p2p_web_seed_rate)")
    parse.add_argument("--link-floor", type=float, default=0.85,
                       help="fraction of its rate a link must reach alone (TCP/IP headers take about 4 percent)")
    parse.add_argument("--play-var", action="append", default=[], metavar="KEY=VALUE",
                       help="an extra variable for the plays (-e), for example staging_poll_interval=1; part of what a cell is")
    parse.add_argument("--ways", nargs="+", choices=WAY_NAMES, default=list(WAY_NAMES))
    parse.add_argument("--results", type=Path, default=results, help="JSON lines, one per cell, read back to resume")
    parse.add_argument("--fresh", action="store_true", help="forget the cells of earlier runs")
    return parse


def parse_args(argv: list[str], results: Path) -> argparse.Namespace:
    """The arguments, checked; sizes and ways each once, sizes in ascending order."""
    parse = parser(results)
    args = parse.parse_args(argv)
    if not all(1 <= n <= MAX_NODES for n in args.nodes):
        parse.error(f"--nodes: each size from 1 to {MAX_NODES}")
    for name in ("runs", "size_mib", "files", "wan_mib", "lan_mib", "web_seed_mib"):
        if getattr(args, name) < 1:
            parse.error(f"--{name.replace('_', '-')}: at least 1")
    if args.files > args.size_mib:
        parse.error("--files: at most one shard per MiB of --size-mib")
    if not 0 < args.link_floor <= 1:
        parse.error("--link-floor: a fraction above 0, at most 1")
    if bad := [var for var in args.play_var if "=" not in var or var.startswith("=")]:
        parse.error(f"--play-var: KEY=VALUE, not {', '.join(bad)}")
    args.nodes = sorted(set(args.nodes))
    args.ways = list(dict.fromkeys(args.ways))
    return args


def config_key(args: argparse.Namespace) -> dict:
    """What makes cells comparable: a cell measured with other settings is neither skipped nor reported."""
    return {"size_mib": args.size_mib, "files": args.files, "wan": args.wan_mib << 20, "lan": args.lan_mib << 20,
            "web_seed": args.web_seed_mib << 20, **({"play_vars": sorted(args.play_var)} if args.play_var else {})}


def read_results(path: Path) -> list[dict]:
    """Every complete line of the results file; a last line cut short by a kill is left out."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def repair(path: Path) -> None:
    """Cut a last line that a kill left without its newline, so that the next cell starts a line of its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def append(path: Path, row: dict) -> None:
    """One line per finished cell, on disk before the next cell starts."""
    with path.open("a") as out:
        out.write(json.dumps(row) + "\n")
        out.flush()
        os.fsync(out.fileno())


def done(rows: list[dict], config: dict) -> set[tuple[str, int, int]]:
    """(way, N, run) of every cell already measured with these settings."""
    return {(r["way"], r["nodes"], r["run"]) for r in rows if r.get("kind") == "cell" and r.get("config") == config}


def plan(ways: list[str], sizes: list[int], runs: int, measured: set[tuple[str, int, int]]) -> dict[int, list[tuple[int, str]]]:
    """The cells still to measure, as {N: [(run, way), ...]} for each N that has any. The order of the ways is
    reversed from one run to the next, so that no way always runs first on a fresh site."""
    todo = {}
    for n in sizes:
        cells = [(run, way) for run in range(1, runs + 1) for way in (ways if run % 2 else ways[::-1]) if (way, n, run) not in measured]
        if cells:
            todo[n] = cells
    return todo


def partial(ways: list[str], sizes: list[int], runs: dict[str, int]) -> str | None:
    """What a published sweep leaves out of the full one (every way, N = 2 to 16, three runs each); None when nothing.
    ``runs``: the fewest runs of any cell of each way."""
    short = by_runs({way: n for way, n in runs.items() if n < FULL_RUNS})
    every_way = len(short) == 1 and set(next(iter(short.values()))) == set(runs)
    missing = [f"N = {', '.join(str(n) for n in FULL_SIZES if n not in sizes)}" if not set(FULL_SIZES) <= set(sizes) else "",
               *(f"cells{'' if every_way else ' of ' + ', '.join(names)} with {n} run{'s' if n > 1 else ''}, not {FULL_RUNS}"
                 for n, names in short.items()),
               f"the ways {', '.join(w for w in WAY_NAMES if w not in ways)}" if set(WAY_NAMES) - set(ways) else ""]
    missing = [m for m in missing if m]
    return "; ".join(missing) if missing else None


def by_runs(runs: dict[str, int]) -> dict[int, list[str]]:
    """The ways grouped by their number of runs, most runs first."""
    groups: dict[int, list[str]] = {}
    for way, n in runs.items():
        groups.setdefault(n, []).append(way)
    return dict(sorted(groups.items(), reverse=True))
