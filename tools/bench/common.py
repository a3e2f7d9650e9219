"""Shared pieces of the benchmarks: paths, timing, model data, the report file."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / ".build")]
WORK = REPO / ".cache" / "bench"
# MODELSEED_BENCH_REPORT sends a trial run elsewhere than the published results.
REPORT = Path(os.environ.get("MODELSEED_BENCH_REPORT", REPO / "docs" / "benchmarks.md"))
CHUNK = 16 << 20


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


def write_random_model(target: Path, size_mib: int, files: int) -> None:
    """``files`` weight shards of random bytes totalling ``size_mib`` MiB plus a config, made once."""
    if target.exists():
        return
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "config.json").write_bytes(b'{"model_type": "bench"}')
    shard = (size_mib << 20) // files
    for i in range(files):
        with (staging / f"model-{i + 1:05d}-of-{files:05d}.safetensors").open("wb") as out:
            written = 0
            while written < shard:
                written += out.write(os.urandom(min(CHUNK, shard - written)))
    staging.rename(target)


# Runs a command and reports its own peak RSS: getrusage(RUSAGE_CHILDREN) of a fresh process sees only that child.
_MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.monotonic()\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "print(json.dumps({'seconds': time.monotonic() - t, 'rss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
    " 'rc': p.returncode, 'stdout': p.stdout, 'stderr': p.stderr}))\n"
)


def measured(command: list[str], env: dict | None = None) -> dict:
    """{'seconds', 'rss_kib', 'rc', 'stdout', 'stderr'} of one run of ``command``."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *command], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def run_module(name: str, args: dict, workdir: Path) -> tuple[float, dict, int]:
    """Run a module file as Ansible runs it on a host: (seconds, result, peak RSS in KiB)."""
    args_file = workdir / f"{name}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=str(REPO / ".build"))
    run = measured([sys.executable, str(REPO / "plugins" / "modules" / f"{name}.py"), str(args_file)], env=env)
    result = json.loads(run["stdout"]) if run["stdout"].strip().startswith("{") else {"failed": True, "msg": run["stderr"]}
    if result.get("failed"):
        raise SystemExit(f"{name} failed: {result.get('msg')}")
    return run["seconds"], result, run["rss_kib"]


def drop_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["sync"], check=True)


def write_section(name: str, body: str) -> None:
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n\nProduced by `make bench`; the machine is named in each section.\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text)


def summary(values: list[float]) -> tuple[float, float, float]:
    """(min, median, max) of a cell's runs."""
    return min(values), statistics.median(values), max(values)


def overlap(a: list[float], b: list[float]) -> bool:
    """Whether two cells' spreads (min-max) overlap: then their medians do not tell them apart."""
    return max(a) >= min(b) and max(b) >= min(a)


def verdict(ours: list[float], theirs: list[float], target: float = 1.0) -> str:
    """How ``ours`` compares with ``theirs`` against ``target`` (a ratio of medians), saying when the spreads overlap:
    ``ours`` against ``theirs`` times ``target``, the line the target draws."""
    ratio = statistics.median(ours) / statistics.median(theirs)
    met = "met" if ratio <= target else "NOT met"
    if min(len(ours), len(theirs)) < 2:
        return f"{ratio:.2f}x: target {met} in one run each (no spread: noise not ruled out)"
    spreads = "the spreads" if target == 1 else f"the spread and {target:g} times the other's"
    if overlap(ours, [target * value for value in theirs]):
        return f"{ratio:.2f}x: target {met} by the medians, but {spreads} overlap, so the two are not distinguishable"
    return f"{ratio:.2f}x: target {met}; {spreads} do not overlap"
