"""Tally of the hostile-world suite: each fault class, how often it was injected, how the runs ended.

Tests call ``record`` once per injection. Rows go to a JSON-lines file (``MODELSEED_RELIABILITY_LOG``,
default ``.build/reliability/results.jsonl``) so several pytest processes can add to one tally;
``render`` turns the tally into the table of ``docs/reliability.md``.

``MODELSEED_STRESS_N`` sets how often the looped cases repeat (5 in ``make test``, 30 in ``make stress``);
``MODELSEED_SEED`` replays a run (every looped case prints the seed it used).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_LOG = REPO / ".build" / "reliability" / "results.jsonl"
REPORT = REPO / ".build" / "reliability" / "report.md"
QUICK_N = 5


def log_path() -> Path:
    return Path(os.environ.get("MODELSEED_RELIABILITY_LOG", DEFAULT_LOG))


def iterations(minimum: int = QUICK_N) -> int:
    """How many times a looped case repeats: MODELSEED_STRESS_N, never below ``minimum``."""
    return max(int(os.environ.get("MODELSEED_STRESS_N", minimum)), minimum)


def seeded_rng(case: str) -> tuple[random.Random, int]:
    """A random source for one looped case, and its seed (print it, so a failure can be replayed)."""
    seed = int(os.environ.get("MODELSEED_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"{case}: seed {seed} (replay with MODELSEED_SEED={seed})")
    return random.Random(f"{seed}:{case}"), seed


def record(fault: str, *, outcome: str, injected: int = 1, handled: int = 1, corrupt: int = 0, leaked: int = 0, seed: int | None = None) -> None:
    """Count ``injected`` injections of ``fault``; ``handled`` of them ended as ``outcome`` says they must.

    ``outcome`` is the expected end, e.g. "completes with correct bytes" or "fails clearly, nothing written".
    ``corrupt`` counts wrong or partial files found under a final name afterwards, ``leaked`` tokens found
    anywhere; both must stay 0. Call it before asserting, so a failing case is counted too.
    """
    row = {"fault": fault, "outcome": outcome, "injected": injected, "handled": handled, "corrupt": corrupt, "leaked": leaked,
           "seed": seed, "time": time.time()}
    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write of one line with O_APPEND: concurrent writers never interleave within a row.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
    finally:
        os.close(fd)


def read(path: Path | None = None) -> list[dict]:
    path = path or log_path()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tally(rows: list[dict]) -> OrderedDict:
    totals: OrderedDict = OrderedDict()
    for row in rows:
        key = row["fault"]
        entry = totals.setdefault(key, {"outcome": row["outcome"], "injected": 0, "handled": 0, "corrupt": 0, "leaked": 0})
        for field in ("injected", "handled", "corrupt", "leaked"):
            entry[field] += row[field]
    return totals


def summary(rows: list[dict]) -> dict:
    """Totals over every row: injected, handled, corrupt, leaked."""
    return {field: sum(row[field] for row in rows) for field in ("injected", "handled", "corrupt", "leaked")}


def summary_line(rows: list[dict]) -> str:
    sums = summary(rows)
    return (f"{sums['injected']} faults injected, {sums['handled']} ended as expected, "
            f"{sums['corrupt']} corrupt files, {sums['leaked']} tokens leaked")


def all_well(rows: list[dict]) -> bool:
    """Every injection ended as expected, nothing corrupt, nothing leaked."""
    sums = summary(rows)
    return sums["handled"] == sums["injected"] and sums["corrupt"] == 0 and sums["leaked"] == 0


def fresh_log(prefix: str = "run") -> Path:
    """A new log file name under .build/reliability for one run of the suite."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return DEFAULT_LOG.parent / f"{prefix}-{stamp}-{os.getpid()}.jsonl"


def render(rows: list[dict], *, title: str, preamble: str = "") -> str:
    totals = tally(rows)
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble.strip(), ""]
    lines += [
        "| fault class | expected outcome | injected | ended as expected | corrupt files | tokens leaked |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for fault, entry in sorted(totals.items()):
        lines.append(f"| {fault} | {entry['outcome']} | {entry['injected']} | {entry['handled']} | {entry['corrupt']} | {entry['leaked']} |")
    sums = summary(rows)
    lines.append(f"| **all** | | **{sums['injected']}** | **{sums['handled']}** | **{sums['corrupt']}** | **{sums['leaked']}** |")
    return "\n".join(lines) + "\n"
