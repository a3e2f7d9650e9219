"""Tally of the hostile-world suite: each fault class, how often it was injected, how the runs ended.

Tests call ``record`` once per injection. Rows go to a JSON-lines file (``MODELSEED_RELIABILITY_LOG``,
default ``.build/reliability/results.jsonl``) so several pytest processes can add to one tally;
``render`` turns the tally into the tables of ``docs/reliability.md``, and ``publish`` writes them only for
a run that passed (``PytestRun``: pytest's exit code and its tests by result).

``MODELSEED_STRESS_N`` sets how often the looped cases repeat (5 in ``make test``, 30 in ``make stress``);
``MODELSEED_SEED`` replays a run (every looped case prints the seed it used).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

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


KILL_TIMINGS = ("before completion", "after completion", "missed")
MEASURED = ("corrupt", "leaked")  # None in a row: not looked for by that case


def record(fault: str, *, outcome: str, handled: int, injected: int = 1, corrupt: int | None = None, leaked: int | None = None,
           seed: int | None = None, kill: str | None = None) -> None:
    """Count ``injected`` injections of ``fault``; ``handled`` of them ended as ``outcome`` says they must.

    ``outcome`` is the expected end, e.g. "completes with correct bytes" or "fails clearly, nothing written".
    ``corrupt`` counts wrong or partial files found under a final name afterwards, ``leaked`` tokens found
    anywhere; both must be 0 where they were looked for, and stay None (shown as "not measured") where the case
    did not look. ``kill`` says when a SIGKILL hit the module's process: "before completion" or "after completion"
    of its work, or "missed" when the process had already exited: a missed kill injected nothing, it is counted
    apart and never as a kill. Call it before asserting, so a failing case is counted too.
    """
    if kill is not None and kill not in KILL_TIMINGS:
        raise ValueError(f"kill must be one of {KILL_TIMINGS}, not {kill!r}")
    if kill == "missed":
        injected, handled = 0, 0
    row = {"fault": fault, "outcome": outcome, "injected": injected, "handled": handled, "corrupt": corrupt, "leaked": leaked,
           "seed": seed, "kill": kill, "time": time.time()}
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


def _measured(rows: list[dict], name: str) -> tuple[int | None, int, int]:
    """The sum of ``name`` over the rows that measured it (None if none did), the injections those rows cover,
    and the injections of all rows."""
    measured = [row for row in rows if row.get(name) is not None]
    total = sum(row["injected"] for row in rows)
    if not measured:
        return None, 0, total
    return sum(row[name] for row in measured), sum(row["injected"] for row in measured), total


def tally(rows: list[dict]) -> OrderedDict:
    """Per fault class: its outcome, injected and handled sums, and for corrupt and leaked a ``_measured`` triple."""
    groups: OrderedDict = OrderedDict()
    for row in rows:
        groups.setdefault(row["fault"], []).append(row)
    totals: OrderedDict = OrderedDict()
    for fault, group in groups.items():
        entry = {"outcome": group[0]["outcome"], "injected": sum(r["injected"] for r in group), "handled": sum(r["handled"] for r in group)}
        for name in MEASURED:
            entry[name] = _measured(group, name)
        entry["kills"] = {timing: sum(1 for r in group if r.get("kill") == timing) for timing in KILL_TIMINGS}
        totals[fault] = entry
    return totals


def summary(rows: list[dict]) -> dict:
    """Totals over every row: injected, handled; corrupt and leaked as ``_measured`` triples; kills by timing."""
    sums = {name: sum(row[name] for row in rows) for name in ("injected", "handled")}
    for name in MEASURED:
        sums[name] = _measured(rows, name)
    sums["kills"] = {timing: sum(1 for r in rows if r.get("kill") == timing) for timing in KILL_TIMINGS}
    return sums


def cell(measured: tuple[int | None, int, int]) -> str:
    """A corrupt or leaked count as the report shows it: "not measured", the count, or the count and how much it covers."""
    value, covered, total = measured
    if value is None:
        return "not measured"
    return str(value) if covered == total else f"{value} (in {covered} of {total} injections)"


def summary_line(rows: list[dict]) -> str:
    sums = summary(rows)
    line = (f"{sums['injected']} faults injected, {sums['handled']} ended as expected, "
            f"corrupt files: {cell(sums['corrupt'])}, tokens leaked: {cell(sums['leaked'])}")
    kills = sums["kills"]
    if any(kills.values()):
        line += (f"; kills {kills['before completion']} before completion, {kills['after completion']} after it, "
                 f"{kills['missed']} missed (process already gone, not counted)")
    return line


def all_well(rows: list[dict]) -> bool:
    """Every injection ended as expected, nothing corrupt and nothing leaked where that was looked for."""
    sums = summary(rows)
    return sums["handled"] == sums["injected"] and not sums["corrupt"][0] and not sums["leaked"][0]


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
        lines.append(f"| {fault} | {entry['outcome']} | {entry['injected']} | {entry['handled']} | {cell(entry['corrupt'])} | "
                     f"{cell(entry['leaked'])} |")
    sums = summary(rows)
    lines.append(f"| **all** | | **{sums['injected']}** | **{sums['handled']}** | **{cell(sums['corrupt'])}** | **{cell(sums['leaked'])}** |")
    killed = [(fault, entry["kills"]) for fault, entry in sorted(totals.items()) if any(entry["kills"].values())]
    if killed:
        lines += [
            "",
            "SIGKILL timing: a kill counts only when the module's process was alive (not a zombie) when it was sent; it hit",
            "before the module's work was in place, or after it (during the cleanup). A kill that found the process gone",
            "missed: it is not counted above.",
            "",
            "| fault class | before completion | after completion | missed (not counted) |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {fault} | {k['before completion']} | {k['after completion']} | {k['missed']} |" for fault, k in killed]
    return "\n".join(lines) + "\n"


@dataclass
class PytestRun:
    """How the pytest run behind a tally ended: its exit code and, from its JUnit XML, the tests by result
    (None where the XML is missing: pytest ended before writing it)."""

    exit_code: int
    passed: int | None = None
    skipped: int | None = None
    failed: int | None = None
    errors: int | None = None
    skips: list[str] = field(default_factory=list)

    @classmethod
    def from_junit(cls, exit_code: int, junit: Path) -> PytestRun:
        try:
            root = ElementTree.parse(junit).getroot()
        except (OSError, ElementTree.ParseError):
            return cls(exit_code)
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        counts = {name: sum(int(suite.get(name, 0)) for suite in suites) for name in ("tests", "skipped", "failures", "errors")}
        skips = [f"{case.get('classname')}::{case.get('name')} ({skip.get('message', '')})"
                 for case in root.iter("testcase") for skip in case.findall("skipped")]
        return cls(exit_code, passed=counts["tests"] - counts["skipped"] - counts["failures"] - counts["errors"],
                   skipped=counts["skipped"], failed=counts["failures"], errors=counts["errors"], skips=skips)

    def line(self) -> str:
        def shown(count: int | None) -> str:
            return "not measured" if count is None else str(count)

        return (f"pytest exit code {self.exit_code}; tests passed {shown(self.passed)}, skipped {shown(self.skipped)}, "
                f"failed {shown(self.failed)}, errors {shown(self.errors)}")

    def ok(self) -> bool:
        return self.exit_code == 0 and not self.failed and not self.errors


def publish(path: Path, rows: list[dict], run: PytestRun, *, title: str, preamble: str = "") -> bool:
    """Write the report to ``path`` only for a run that passed: pytest exited 0, the tally is not empty and all is
    well in it. Returns whether it wrote; a failed run leaves ``path`` as it was."""
    if not (run.ok() and rows and all_well(rows)):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(rows, title=title, preamble=preamble))
    tmp.replace(path)
    return True
