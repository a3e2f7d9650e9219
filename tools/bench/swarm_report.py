"""The swarm benchmark's section of docs/benchmarks.md: per mechanism and N, the transfer phase and the staging
host's egress, and whether the targets are met."""

from __future__ import annotations

import statistics

from common import machine, summary, verdict, write_section

EGRESS_TARGET = 2.0  # copies of the model the staging host may send
RATIO_TARGET = 1.5  # transfer at the largest N over the one at the smallest


def cell_line(mechanism: str, n: int, rows: list[dict]) -> str:
    low, median, high = summary([r["transfer"] for r in rows])
    egress = [r["staging_copies"] for r in rows]
    seen = min(r["seeders_seen"] for r in rows), min(r["completed_events"] for r in rows)
    return (f"| {mechanism} | {n} | {len(rows)} | {median:.1f} ({low:.1f}-{high:.1f}) | {statistics.median(egress):.2f} (max {max(egress):.2f}) | "
            f"{statistics.median(r['web_seed_copies'] for r in rows):.2f} | {seen[0]} / {seen[1]} |")


def mechanism_verdict(name: str, rows: list[dict]) -> str:
    sizes = sorted({r["nodes"] for r in rows})
    worst = max(r["staging_copies"] for r in rows)
    egress = f"staging egress at most {worst:.2f} copies: target {'met' if worst <= EGRESS_TARGET else 'NOT met'}"
    if len(sizes) < 2:
        return f"- {name}: {egress}"
    small = [r["transfer"] for r in rows if r["nodes"] == sizes[0]]
    large = [r["transfer"] for r in rows if r["nodes"] == sizes[-1]]
    return f"- {name}: {egress}; transfer at N={sizes[-1]} over N={sizes[0]}: {verdict(large, small, RATIO_TARGET)}"


def publish(args, config: dict, mechanisms: list, rows: list[dict]) -> None:
    lines = ["## Swarm: the p2p engine alone", "",
             f"{machine()}; other work ran on the machine at the same time, so times are noisy. A site (support.fleet.site): "
             f"the staging host and N nodes, each on its own link shaped to {config['lan'] >> 20} MiB/s both ways; a "
             f"{config['size_mib']} MiB model in {config['files']} shards plus config and manifest, exported as a tree. The staging "
             "host runs opentracker and nginx (the web seed); every node runs `p2p_peer` (aria2c). Transfer: from the start of "
             "the peers to the last complete download. Staging egress: what the staging host's link sent (ip -s link), in "
             f"copies of the model. Targets: egress at most {EGRESS_TARGET:g} copies, transfer at N=16 at most "
             f"{RATIO_TARGET:g}x the one at N=2.", "",
             "| mechanism | N | runs | transfer s, median (min-max) | staging egress, copies | of which web seed | tracker: seeders / completed |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for mechanism in mechanisms:
        mine = [r for r in rows if r["mechanism"] == mechanism.name]
        for n in sorted({r["nodes"] for r in mine}):
            lines.append(cell_line(mechanism.name, n, [r for r in mine if r["nodes"] == n]))
    lines.append("")
    lines += [f"- {m.name}: {m.label}" for m in mechanisms]
    lines.append("")
    lines += [mechanism_verdict(m.name, [r for r in rows if r["mechanism"] == m.name]) for m in mechanisms
              if any(r["mechanism"] == m.name for r in rows)]
    write_section("swarm", "\n".join(lines))
