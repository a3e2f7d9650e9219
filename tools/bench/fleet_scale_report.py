"""The fleet-scale benchmark's section of the report and its plot, from the cells in the results file."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

from common import REPORT, verdict, write_section
from fleet_scale_cells import WAY_NAMES, by_runs, config_key, partial

PLOT = REPORT.parent / "fleet-scale.png"
OURS = ("push", "pull", "p2p")


def spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def copies(cells: list[dict], key: str) -> list[float]:
    return [cell[key] / cell["model_bytes"] for cell in cells]


def table(ways, skipped: dict[str, str], cells: dict[tuple[str, int], list[dict]], sizes: list[int], failures: dict[tuple[str, int], str]) -> str:
    rows = ["| way | N | wall s | transfer phase s | hub egress (copies) | staging egress (copies) | runs |",
            "|---|---|---|---|---|---|---|"]
    for way in ways:
        for n in sizes:
            runs = cells.get((way.name, n), [])
            if way.name in skipped or not runs:
                why = skipped.get(way.name) or (f"failed: {failures[(way.name, n)]}" if (way.name, n) in failures else "no run finished")
                rows.append(f"| {way.name} | {n} | not measured ({why}) | not measured | not measured | not measured | 0 |")
                continue
            phases = [c["transfer"] for c in runs if c["transfer"] is not None]
            rows.append(f"| {way.name} | {n} | {spread([c['wall'] for c in runs])} | {spread(phases) if phases else 'not found'} | "
                        f"{spread(copies(runs, 'hub_bytes'), 2)} | {spread(copies(runs, 'staging_bytes'), 2)} | {len(runs)} |")
    return "\n".join(rows)


def targets(skipped: dict[str, str], cells: dict[tuple[str, int], list[dict]], sizes: list[int]) -> str:
    lines = []

    def measured(way: str) -> list[int]:
        return [n for n in sizes if cells.get((way, n))]

    for way in OURS:
        if way in skipped or not measured(way):
            lines.append(f"- Hub egress = 1 copy, `{way}`: not measured ({skipped.get(way, 'no run finished')}).")
            continue
        worst = max(max(copies(cells[(way, n)], "hub_bytes")) for n in measured(way))
        lines.append(f"- Hub egress = 1 copy, `{way}`: at most {worst:.2f} copies over N = {', '.join(map(str, measured(way)))}: "
                     f"{'met' if worst < 1.5 else 'NOT met'}.")
    if "p2p" in skipped or not measured("p2p"):
        why = skipped.get("p2p", "no run finished")
        lines.append(f"- `p2p` staging egress <= 2 copies for every N: not measured ({why}).")
        lines.append(f"- `p2p` transfer phase at N=16 <= 1.5x that at N=2: not measured ({why}).")
    else:
        worst = max(max(copies(cells[("p2p", n)], "staging_bytes")) for n in measured("p2p"))
        lines.append(f"- `p2p` staging egress <= 2 copies for every N: at most {worst:.2f} over N = "
                     f"{', '.join(map(str, measured('p2p')))}: {'met' if worst <= 2 else 'NOT met'}.")
        if not (cells.get(("p2p", 2)) and cells.get(("p2p", 16))):
            lines.append("- `p2p` transfer phase at N=16 <= 1.5x that at N=2: not measured (this sweep lacks N=2 or N=16).")
    for way in OURS:
        small, big = cells.get((way, 2)), cells.get((way, 16))
        if way in skipped or not small or not big:
            continue
        phases = ([c["transfer"] for c in big if c["transfer"] is not None], [c["transfer"] for c in small if c["transfer"] is not None])
        if all(phases):
            target = " (target 1.5x)" if way == "p2p" else " (for scale)"
            lines.append(f"- `{way}` transfer phase N=16 against N=2: {verdict(phases[0], phases[1], 1.5)}{target}; whole play "
                         f"{statistics.median(c['wall'] for c in big):.1f} s against {statistics.median(c['wall'] for c in small):.1f} s.")
    for way in OURS:
        for n in (n for n in sizes if n >= 4):
            ours, theirs = cells.get((way, n)), cells.get(("cli", n))
            if way in skipped or not ours or not theirs:
                continue
            said = verdict([c["wall"] for c in ours], [c["wall"] for c in theirs])
            lines.append(f"- `{way}` faster than every node downloading, N={n}: wall time {said}.")
    return "\n".join(lines)


def time_spent(ways, cells: dict[tuple[str, int], list[dict]], sizes: list[int]) -> str:
    """Where a play's wall time went at the largest N measured: its slowest tasks, each at its slowest host, in
    the cell's first run."""
    lines = []
    for way in ways:
        ns = [n for n in sizes if cells.get((way.name, n)) and cells[(way.name, n)][0].get("slowest_tasks")]
        if ns:
            cell = cells[(way.name, ns[-1])][0]
            shown = "; ".join(f"{name.split(' : ')[-1]} {seconds:.1f} s" for name, seconds in list(cell["slowest_tasks"].items())[:4])
            # Each play from its first task's start to its last task's end, and how many task results all hosts gave.
            plays = "; ".join(f"{play} {seconds:.1f} s" for play, seconds in cell.get("play_seconds", {}).items())
            counted = f" Plays: {plays} ({cell['tasks_run']} task results in all)." if plays else ""
            lines.append(f"- `{way.name}`, N={ns[-1]}: {shown}.{counted}")
    return "\n".join(lines) or "- No play recorded its tasks."


def machine_line(cells: dict[tuple[str, int], list[dict]]) -> str:
    """The machine, and how busy it was as each cell finished (load average over 1 minute)."""
    rows = [c for runs in cells.values() for c in runs]
    ram = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    loads = [c["load"] for c in rows if "load" in c]
    busy = f"; load average (1 min) as the cells finished: {min(loads):.1f} to {max(loads):.1f}" if loads else ""
    days = sorted({c["finished"][:10] for c in rows})
    return (f"{platform.machine()}, {os.cpu_count()} cores, {ram / 2**20:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}, measured {' to '.join(dict.fromkeys([days[0], days[-1]])) if days else 'never'}{busy}")


def plot(ways, skipped: dict[str, str], cells: dict[tuple[str, int], list[dict]], sizes: list[int], path: Path, heading: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel  # only the report needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    figure, (walls, egress) = plt.subplots(1, 2, figsize=(11, 4.2))
    for way, marker in zip(ways, "osD^v<>", strict=False):
        ns = [n for n in sizes if cells.get((way.name, n))]
        if way.name in skipped or not ns:
            continue
        wall = [statistics.median(c["wall"] for c in cells[(way.name, n)]) for n in ns]
        staged = [statistics.median(copies(cells[(way.name, n)], "staging_bytes")) for n in ns]
        line, = walls.plot(ns, wall, marker=marker, label=f"{way.name}, whole run")
        phases = [statistics.median(c["transfer"] for c in cells[(way.name, n)] if c["transfer"] is not None) for n in ns]
        walls.plot(ns, phases, marker=marker, markersize=3, linestyle="--", color=line.get_color(), label=f"{way.name}, transfer phase")
        # Ways with the same egress would hide each other: markers of different shapes and sizes, lines a little apart.
        egress.plot(ns, staged, marker=marker, markersize=9 - 2 * len(egress.lines), alpha=0.8, label=way.name)
    for axes, title, unit in ((walls, "Wall time", "seconds (median)"), (egress, "Staging host egress", "copies of the model (median)")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(sizes, [str(n) for n in sizes])
        axes.set_xlabel("nodes (N)")
        axes.set_ylabel(unit)
        axes.set_title(title)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(heading)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def publish(args: argparse.Namespace, ways, skipped: dict[str, str], rows: list[dict]) -> None:
    config = config_key(args)
    mine = [r for r in rows if r["config"] == config and r["nodes"] in args.nodes]
    cells: dict[tuple[str, int], list[dict]] = {}
    for row in (r for r in mine if r["kind"] == "cell"):
        cells.setdefault((row["way"], row["nodes"]), []).append(row)
    # The last failure of a cell that never finished: why its row is empty.
    failures = {(r["way"], r["nodes"]): r["reason"] for r in mine if r["kind"] == "failure"}
    links = [r["rates"] for r in mine if r["kind"] == "links"]  # every site this sweep brought up
    slowest = {"wan": min((rate for rates in links for rate in rates["wan"].values()), default=0),
               "lan": min((rate for rates in links for name, pair in rates.items() if name != "wan" for rate in pair.values()),
                          default=0)}
    sizes = sorted(args.nodes)
    measured = [way.name for way in ways if any((way.name, n) in cells for n in sizes)]
    counts = {way: [len(rows) for (name, _n), rows in cells.items() if name == way] for way in measured}
    runs, most = ({way: pick(c) for way, c in counts.items()} for pick in (min, max))
    left_out = partial(measured, [n for n in sizes if any((way, n) in cells for way in measured)], runs)
    spans = {}  # "1 to 3" -> the ways whose cells ran that many times
    for way in measured:
        spans.setdefault(f"{runs[way]}" + (f" to {most[way]}" if most[way] > runs[way] else ""), []).append(way)
    runs_text = ", ".join(f"{n} ({', '.join(names)})" for n, names in spans.items()) if len(spans) > 1 else next(iter(spans), "0")
    scope = (f"**Partial sweep** (the load average as the cells finished is below): it leaves out "
             f"{left_out}. The full sweep: `python tools/bench fleet-scale` (N = 2, 4, 8, 16, 3 runs per cell, every way)."
             if left_out else "The full sweep: every way, N = 2, 4, 8, 16, 3 runs per cell.")
    labels = "\n".join(f"- `{way.name}`: {way.label}." for way in ways)
    checked = (f"Each link alone, either way, at every N (one TCP stream between Python sockets for 2 s, the first 0.5 s\n"
               f"left out, the best of up to 3 tries): the WAN link reached at least {slowest['wan'] / 2**20:.1f} MiB/s, the slowest "
               f"LAN link {slowest['lan'] / 2**20:.1f} MiB/s." if links else "No link check was recorded.")
    title = (f"{args.size_mib} MiB model, WAN {args.wan_mib} MiB/s, LAN {args.lan_mib} MiB/s"
             f"{': partial sweep, runs per cell ' + runs_text if left_out else ''}")
    plot(ways, skipped, cells, sizes, PLOT, title)
    groups = by_runs(most) or {args.runs: list(args.ways)}  # one command per number of runs: the one that completes the sweep
    commands = " and ".join(
        f"`python tools/bench fleet-scale{'' if len(groups) == 1 and set(args.ways) == set(WAY_NAMES) else ' --ways ' + ' '.join(names)} "
        f"--nodes {' '.join(map(str, sizes))} --runs {n} --size-mib {args.size_mib} --files {args.files} --wan-mib {args.wan_mib} "
        f"--lan-mib {args.lan_mib} --web-seed-mib {args.web_seed_mib}{''.join(f' --play-var {v}' for v in args.play_var)}`"
        for n, names in groups.items())
    body = f"""## Seeding a site: N = {', '.join(map(str, sizes))}

{scope}

A site on this machine: the test hub in a network namespace of its own behind one shared WAN link of
{args.wan_mib} MiB/s; the staging host (node1) and every node on a LAN link of its own of {args.lan_mib} MiB/s (veth
pairs on one bridge, a `tc tbf` on both ends of each, so both directions are limited; no added latency).
{checked}

Nodes are real sshd in bubblewrap sandboxes with their trees on tmpfs (real nodes have a disk each; here
they would share one). The model: {args.size_mib} MiB in {args.files} shards of random bytes plus a config file. Ansible
runs with forks = N + 1, all nodes in one batch; data sync on (`node_install_sync: true`: fsync before rename). For
`p2p` the staging host's web seed sends at most {args.web_seed_mib} MiB/s in all (`staging_p2p_web_seed_rate`), so that the
nodes take most pieces from each other.
Every run starts from fresh nodes and an empty staging host; runs per cell: {runs_text}, the order of the ways
alternating from one run to the next.

{labels}

Wall time: the whole `ansible-playbook` run (or all the ssh sessions) as the controller sees it, the
staging download and the readiness proof included. Transfer phase: from the first node starting to fetch
to the last node verified. The start is the first of ten 100 ms samples in a row (1 s) in each of which the
nodes' LAN links together carry at least half the WAN rate (their counters, read every 100 ms; Ansible sending a
module to every node reaches that for a sample or two at most, the model's flow does not stop); the end is when
the last node holds every weight shard at full size where its SDK finds it (the node trees, looked at every
100 ms from outside the nodes): files get there only once verified, by the SDK's sha256 check for `cli`, against
the bundle's manifest for the others.
Egress: bytes the hub's and the staging host's interfaces sent during the run (`ip -s link`, TCP/IP and
HTTP or ssh overhead included), in copies of the model's files. Median (min-max) of the runs.

{table(ways, skipped, cells, sizes, failures)}

![wall time and staging egress against N]({PLOT.name})

Where the plays' time went (slowest tasks, each at its slowest host):

{time_spent(ways, cells, sizes)}

Targets:

{targets(skipped, cells, sizes)}

Method: {commands}
(cells in `{args.results.name}`; a rerun resumes). Machine: {machine_line(cells)}.
"""
    write_section("fleet_scale", body)
    print(REPORT.read_text())
