"""Download benchmark: modelscope_model against the SDK's own CLI, from the loopback hub, at several sizes,
with the floor (the same bytes from the hub to disk, nothing checked) measured in the same runs.

    python tools/bench/download.py [--runs 5] [--sizes-mib 1024,4096] [--files 4]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

from common import REPORT, WORK, machine, run_module, summary, verdict, write_random_model, write_section

from support.mshub import MsHub
from support.playbook import ansible_env, playbook_command, write_playbook
from support.sdk import ensure_sdk

MODEL = "bench/model"
PLAYBOOK = "modelscope_model, through ansible-playbook"
DIRECT = "modelscope_model, module process only"
CLI = "modelscope download (SDK 1.40.2)"
FLOOR = "floor: hub to disk, one stream per file, nothing checked"


def ours(hub: MsHub, cache: Path) -> float:
    task = {"modelseed.fleet.modelscope_model": {"name": MODEL, "cache_dir": str(cache), "endpoint": hub.url, "layout": "snapshots"}}
    command = playbook_command(write_playbook([task], cache.parent / "bench.yml"))
    started = time.monotonic()
    subprocess.run(command, env=ansible_env(), check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def module_direct(hub: MsHub, cache: Path) -> float:
    """The module alone, run as Ansible runs it on a host but without ansible-playbook's start-up."""
    args = {"name": MODEL, "cache_dir": str(cache), "endpoint": hub.url, "layout": "snapshots"}
    elapsed, result, _rss = run_module("modelscope_model", args, cache.parent)
    if not result.get("changed"):
        raise SystemExit(f"modelscope_model did not download: {result.get('msg')}")
    return elapsed


def cli(hub: MsHub, cache: Path, sdk) -> float:
    env = sdk.env_for(hub, cache, home=cache.parent / "home")
    started = time.monotonic()
    # Through the venv's python: the console script's shebang names the directory the venv was built in.
    subprocess.run([str(sdk.python), str(sdk.root / "bin" / "modelscope"), "download", "--model", MODEL, "--cache_dir", str(cache)],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def floor(hub: MsHub, cache: Path, files: list[str]) -> float:
    """What any downloader needs here at least: every file read from the hub and written to disk at once."""
    cache.mkdir(parents=True)

    def fetch(path: str) -> None:
        url = f"{hub.url}/api/v1/models/{MODEL}/repo?" + urlencode({"Revision": "master", "FilePath": path})
        with urllib.request.urlopen(url) as reply, (cache / path.replace("/", "_")).open("wb") as out:
            shutil.copyfileobj(reply, out, 1 << 20)

    started = time.monotonic()
    with ThreadPoolExecutor(len(files)) as pool:
        list(pool.map(fetch, files))
    return time.monotonic() - started


def one_download(hub: MsHub, name: str, tool, total: int) -> float:
    """Seconds ``tool`` takes to download the whole model into an empty cache."""
    scratch = WORK / "run"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "home").mkdir(parents=True)
    mark = len(hub.log)
    seconds = tool(scratch / "cache")
    served = hub.log.bytes_served(mark)
    if served < total:
        raise SystemExit(f"{name} fetched {served} of {total} bytes: not a full download")
    return seconds


def timed_runs(hub: MsHub, runs: int, total: int, files: list[str]) -> dict[str, list[float]]:
    sdk = ensure_sdk("1.40.2")
    tools = [
        (PLAYBOOK, lambda c: ours(hub, c)),
        (DIRECT, lambda c: module_direct(hub, c)),
        (CLI, lambda c: cli(hub, c, sdk)),
        (FLOOR, lambda c: floor(hub, c, files)),
    ]
    # One untimed round: whoever runs first would otherwise also pay for reading the hub's files
    # and its own Python files from disk.
    for name, tool in tools:
        one_download(hub, name, tool, total)
    times: dict[str, list[float]] = {name: [] for name, _tool in tools}
    for run in range(runs):
        for name, tool in tools if run % 2 == 0 else tools[::-1]:  # alternate who goes first
            times[name].append(one_download(hub, name, tool, total))
            print(f"run {run + 1}/{runs} {name}: {times[name][-1]:.2f} s", flush=True)
    shutil.rmtree(WORK / "run", ignore_errors=True)
    return times


def size_table(times: dict[str, list[float]], size_mib: int) -> str:
    cli_median = statistics.median(times[CLI])
    rows = []
    for name, values in times.items():
        low, median, high = summary(values)
        rows.append(f"| {name} | {low:.2f} | {median:.2f} | {high:.2f} | {size_mib / median:.0f} | {median / cli_median:.2f}x | "
                    f"{', '.join(f'{v:.2f}' for v in values)} |")
    return "\n".join(rows)


def download_report(results: dict[int, dict[str, list[float]]], files: int, runs: int) -> str:
    judged = max(results)
    tables = "\n\n".join(f"""### {size} MiB

| tool | min s | median s | max s | MiB/s (median) | vs CLI | runs (s) |
|---|---|---|---|---|---|---|
{size_table(times, size)}

Through ansible-playbook against the CLI: {verdict(times[PLAYBOOK], times[CLI])}.
Module process only against the CLI: {verdict(times[DIRECT], times[CLI])}.""" for size, times in sorted(results.items()))
    return f"""## Download from the hub

A model in {files} shards plus a config file, from the loopback test hub (large files redirected to its
object-storage path, replies sent without Nagle delay, as the real hub does), into an empty cache;
{runs} runs of each tool at each size, the order alternating, after one untimed run of each so that none pays
alone for a cold page cache. The floor is measured in the same rounds: the same files read from the hub and
written to disk, one stream per file, nothing checked.
`modelscope_model` checks the sha256 of every byte before a file gets its name. The first row is what users
run, `ansible-playbook` with its own start-up; the second runs the same module file the way Ansible runs it
on a host, without that start-up. Target: modelscope_model through ansible-playbook <= 1.0x the CLI, judged
at {judged} MiB, where Ansible's start-up is amortized as in real use.
Machine: {machine()}.

{tables}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes-mib", default="1024,4096", help="model sizes, comma-separated; the largest is judged")
    parser.add_argument("--files", type=int, default=4)
    args = parser.parse_args()
    results = {}
    for size in (int(s) for s in args.sizes_mib.split(",")):
        hub_root = WORK / f"hub-{size}m-{args.files}"
        write_random_model(hub_root / MODEL, size, args.files)
        files = sorted(p.relative_to(hub_root / MODEL).as_posix() for p in (hub_root / MODEL).rglob("*") if p.is_file())
        total = sum((hub_root / MODEL / f).stat().st_size for f in files)
        with MsHub(hub_root) as hub:
            results[size] = timed_runs(hub, args.runs, total, files)
    write_section("download", download_report(results, args.files, args.runs))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
