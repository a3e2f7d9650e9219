"""Download benchmark: modelscope_model against the SDK's own CLI, from the loopback hub.

    python tools/bench/download.py [--runs 5] [--size-mib 1024] [--files 4]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from common import REPORT, WORK, machine, run_module, write_random_model, write_section
from support.mshub import MsHub
from support.playbook import ansible_env, playbook_command, write_playbook
from support.sdk import ensure_sdk

MODEL = "bench/model-1g"
PLAYBOOK = "modelscope_model, through ansible-playbook"
DIRECT = "modelscope_model, module process only"
CLI = "modelscope download (SDK 1.40.2)"


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


def timed_runs(hub: MsHub, runs: int, total: int) -> dict[str, list[float]]:
    sdk = ensure_sdk("1.40.2")
    tools = [
        (PLAYBOOK, lambda c: ours(hub, c)),
        (DIRECT, lambda c: module_direct(hub, c)),
        (CLI, lambda c: cli(hub, c, sdk)),
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


def download_report(times: dict[str, list[float]], size_mib: int, files: int) -> str:
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = "\n".join(
        f"| {name} | {medians[name]:.2f} | {size_mib / medians[name]:.0f} | {medians[name] / medians[CLI]:.2f}x | "
        f"{', '.join(f'{v:.2f}' for v in values)} |"
        for name, values in times.items())
    return f"""## Download from the hub

{size_mib} MiB model in {files} shards plus a config file, from the loopback test hub (large files redirected to its
object-storage path, replies sent without Nagle delay, as the real hub does), into an empty cache;
{len(times[CLI])} runs, the order alternating, after one untimed run of each tool so that none pays alone for a
cold page cache.
`modelscope_model` checks the sha256 of every byte before a file gets its name. The first row includes
ansible-playbook's own start-up (about a second); the second runs the same module file the way Ansible
runs it on a host, without that start-up. Target: modelscope_model <= 1.0x the CLI.
Machine: {machine()}.

| tool | median s | MiB/s | vs CLI | runs (s) |
|---|---|---|---|---|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=4)
    args = parser.parse_args()
    hub_root = WORK / f"hub-{args.size_mib}m-{args.files}"
    write_random_model(hub_root / MODEL, args.size_mib, args.files)
    total = sum(p.stat().st_size for p in (hub_root / MODEL).rglob("*") if p.is_file())
    with MsHub(hub_root) as hub:
        times = timed_runs(hub, args.runs, total)
    write_section("download", download_report(times, args.size_mib, args.files))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
