"""Run the hostile-world suite many times over and write docs/reliability.md from its tally.

    python tools/stress.py                      # every test marked hostile, looped cases 30 times
    python tools/stress.py --iterations 5 -k hub_faults --output /tmp/reliability.md

The report is written only when the run passed. Exits non-zero, and leaves the report as it was, when
pytest did not exit 0, an injection did not end as expected, or a corrupt file or a leaked token was
found; the tally of such a run goes to .build/reliability/stress-failed.md instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support import reliability  # noqa: E402

MARKER = "hostile"
DEFAULT_OUTPUT = REPO / "docs" / "reliability.md"
FAILED_REPORT = REPO / ".build" / "reliability" / "stress-failed.md"

ABOUT = """\
The hostile-world suite (tests marked `{marker}`) injects faults into real runs of the modules, through
`ansible-playbook`, and checks how each run ends: a hub that answers 5xx or 429, resets or cuts a body
short, goes silent mid-body, sends an empty 200 body, lists a wrong sha256, answers slowly, redirects in a
loop, gets a new revision pushed mid-download, or lies in its listings and revision maps (unsafe paths,
wrong types, JSON too large or too deeply nested); a bundle server that breaks the stream; runs killed with SIGKILL at random
moments, concurrent runs and locks, a disk that fills up; hostile input and secrets that must never
show. After every injection the cache is inspected: every file under its final name, in the SDK
metadata and in the verification records must be byte for byte what was published. A transient fault
must end in a complete, correct result; a permanent one in a failure that names what failed, with
nothing unverified kept. "corrupt files" counts files found wrong afterwards, "tokens leaked" secrets
found in output, logs, files or process arguments and environments; both must be 0, and a case that
does not look for one says "not measured" there."""


def machine() -> str:
    return f"nproc {len(os.sched_getaffinity(0))}, Linux {platform.release()}, Python {platform.python_version()}"


def preamble(seed: int, run: reliability.PytestRun, command: str, replay: str, iterations: int, elapsed: float) -> str:
    lines = [
        ABOUT.format(marker=MARKER),
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {machine()}",
        f"- command: `{command}` ({iterations} iterations of every looped case, {elapsed / 60:.1f} minutes)",
        f"- result: {run.line()}",
    ]
    lines += [f"  - skipped: {skip}" for skip in run.skips]
    lines += [
        f"- seed: {seed}, from which every looped case draws its own stream (replay the run with `{replay}`)",
        f"- `make test` runs the same cases with {reliability.QUICK_N} iterations; its tally goes to `.build/reliability/report.md`.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30, help="MODELSEED_STRESS_N: repetitions of every looped case")
    parser.add_argument("-k", dest="keyword", help="only the tests pytest -k selects")
    parser.add_argument("--seed", type=int, help="MODELSEED_SEED: replay a run")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the report goes")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Looped cases never repeat fewer times than in make test (reliability.iterations): say what really runs.
    repeats = max(args.iterations, reliability.QUICK_N)
    if repeats != args.iterations:
        print(f"stress: looped cases repeat {reliability.QUICK_N} times at least; --iterations {args.iterations} runs them {repeats} times")
    log = reliability.fresh_log("stress")
    junit = log.with_suffix(".xml")
    env = dict(os.environ, MODELSEED_STRESS_N=str(args.iterations), MODELSEED_RELIABILITY_LOG=str(log))
    # One seed for the whole run (each case still draws its own stream from it): --seed replays it all.
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    env["MODELSEED_SEED"] = str(seed)
    command = [sys.executable, "-m", "pytest", "tests", "-m", MARKER, "-q", f"--junitxml={junit}"]
    if args.keyword:
        command += ["-k", args.keyword]
    command += args.pytest_args
    shown = ["python", "tools/stress.py", "--iterations", str(args.iterations)] + (["-k", args.keyword] if args.keyword else [])
    replay = shown + ["--seed", str(seed)]
    started = time.monotonic()
    returncode = subprocess.run(command, cwd=REPO, env=env, check=False).returncode
    run = reliability.PytestRun.from_junit(returncode, junit)
    rows = reliability.read(log)
    elapsed = time.monotonic() - started
    about = preamble(seed, run, shlex.join(shown), shlex.join(replay), repeats, elapsed)
    print(f"stress: {reliability.summary_line(rows)}; {run.line()}")
    if reliability.publish(args.output, rows, run, title="Reliability", preamble=about):
        print(f"stress: report {args.output}")
        return 0
    # Kept for the diagnosis, never where the published report goes.
    FAILED_REPORT.parent.mkdir(parents=True, exist_ok=True)
    FAILED_REPORT.write_text(reliability.render(rows, title="Reliability of a failed stress run", preamble=about))
    why = (f"the run failed (pytest exit code {run.exit_code})" if not run.ok() else "no fault was recorded" if not rows
           else "not every injection ended as expected")
    print(f"stress: {why}; {args.output} left as it was; this run's tally: {FAILED_REPORT}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
