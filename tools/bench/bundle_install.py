"""Bundle and install benchmarks: cache_bundle against `tar -cf`, cache_install (every byte verified) with and
without `sync` against `tar -xf` (nothing verified, nothing synced), a re-install with nothing to do, and peak memory.

    python tools/bench/bundle_install.py [--runs 3] [--size-mib 2048] [--files 4] [--note TEXT]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from pathlib import Path

from common import REPORT, WORK, drop_tree, machine, measured, run_module, summary, verdict, write_random_model, write_section

from support.mshub import MsHub

MODEL = "bench/model-2g"
SMALL = "bench/model-20m"


def staged_cache(size_mib: int, files: int) -> Path:
    """A staging cache holding MODEL and SMALL, downloaded once with modelscope_model."""
    hub_root = WORK / f"hub-{size_mib}m-{files}"
    write_random_model(hub_root / MODEL, size_mib, files)
    write_random_model(hub_root / SMALL, 20, 2)
    cache = WORK / f"staged-{size_mib}m-{files}"
    with MsHub(hub_root) as hub:
        for model in (MODEL, SMALL):
            run_module("modelscope_model", {"name": model, "cache_dir": str(cache), "endpoint": hub.url, "layout": "models"}, WORK)
    return cache


def model_dir(cache: Path, model: str) -> Path:
    owner, name = model.split("/")
    return cache / "models" / owner / name.replace(".", "___")


def hashlib_floor(mib: int = 1024) -> float:
    """sha256 through hashlib (OpenSSL), GB/s, over an in-memory buffer."""
    block = os.urandom(64 << 20)
    digest = hashlib.sha256()
    started = time.monotonic()
    for _block in range(mib // 64):
        digest.update(block)
    return (mib << 20) / (time.monotonic() - started) / 1e9


def disk_floor(directory: Path, mib: int = 2048) -> float:
    """Plain sequential write with an fsync at the end, GB/s."""
    path = directory / "disk-floor.bin"
    block = os.urandom(16 << 20)
    started = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _block in range(mib // 16):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.monotonic() - started
    path.unlink()
    return (mib << 20) / elapsed / 1e9


def bundle_once(cache: Path, dest: Path, models: list[str]) -> tuple[float, int]:
    drop_tree(dest)
    elapsed, _result, rss = run_module("cache_bundle", {
        "cache_dir": str(cache), "dest": str(dest), "models": [{"name": m} for m in models]}, WORK)
    return elapsed, rss


def install_once(bundle: Path, target: Path, fresh: bool = True, sync: bool = True) -> tuple[float, int, dict]:
    if fresh:
        drop_tree(target)
    args = {"src": str(bundle), "cache_dir": str(target), "layout": "models", "sync": sync}
    elapsed, result, rss = run_module("cache_install", args, WORK)
    return elapsed, rss, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def row(label: str, ours: list[float], theirs: list[float], gb: float, target: float | None) -> str:
    (o_min, o_med, _o_max), (t_min, t_med, _t_max) = summary(ours), summary(theirs)
    judged = verdict(ours, theirs, target) if target else f"{o_med / t_med:.2f}x"
    return (f"| {label} | {o_min:.2f} | {o_med:.2f} | {gb / o_med:.2f} | {t_min:.2f} | {t_med:.2f} | "
            f"{'<= %.2fx' % target if target else ''} | {judged} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--note", default="", help="a sentence about the run added to the report (a busy machine, a quick size)")
    args = parser.parse_args()
    cache = staged_cache(args.size_mib, args.files)
    source = model_dir(cache, MODEL)
    big, small = WORK / "bundle-big", WORK / "bundle-small"
    tar_file, target, untarred = WORK / "plain.tar", WORK / "installed", WORK / "untarred"
    t: dict[str, list[float]] = {k: [] for k in ("bundle", "tar_c", "install", "install_nosync", "tar_x", "tar_x_sync", "again_big", "again_small")}
    rss: dict[str, int] = {"bundle": 0, "install": 0}
    for run in range(args.runs):
        ours_first = run % 2 == 0  # alternate who goes first
        for step in ("ours", "tar") if ours_first else ("tar", "ours"):
            if step == "ours":
                seconds, peak = bundle_once(cache, big, [MODEL])
                t["bundle"].append(seconds)
                rss["bundle"] = max(rss["bundle"], peak)
            else:
                drop_tree(tar_file)
                t["tar_c"].append(measured(["tar", "-cf", str(tar_file), "-C", str(source), "."])["seconds"])
        tar_name = next(p.name for p in big.glob("*.tar"))
        for step in ("ours", "nosync", "tar") if ours_first else ("tar", "nosync", "ours"):
            if step == "ours":
                seconds, peak, _result = install_once(big, target)
                t["install"].append(seconds)
                rss["install"] = max(rss["install"], peak)
            elif step == "nosync":
                t["install_nosync"].append(install_once(big, target, sync=False)[0])
            else:
                drop_tree(untarred)
                untarred.mkdir(parents=True)
                t["tar_x"].append(measured(["tar", "-xf", str(big / tar_name), "-C", str(untarred)])["seconds"])
                # The same, made durable: the extracted files flushed (syncfs of their file system) before it ends.
                drop_tree(untarred)
                untarred.mkdir(parents=True)
                t["tar_x_sync"].append(measured(["sh", "-c", 'tar -xf "$1" -C "$2" && sync -f "$2"', "tar",
                                                 str(big / tar_name), str(untarred)])["seconds"])
        t["again_big"].append(install_once(big, target, fresh=False)[0])
        bundle_once(cache, small, [SMALL])
        install_once(small, WORK / "installed-small")
        t["again_small"].append(install_once(small, WORK / "installed-small", fresh=False)[0])
        print(f"run {run + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in t.items()), flush=True)
    hash_gbs, disk_gbs = hashlib_floor(), disk_floor(WORK)
    size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    gb = size / 1e9
    m = {k: median(v) for k, v in t.items()}
    write_section("bundle-install", f"""## Bundle and install

A {args.size_mib} MiB model in {args.files} shards; each tool run as a separate process ({args.runs} runs,
the order alternating); min and median of each. `cache_bundle` reads the hashes the download recorded and computes the
sha256 of the tar it writes; `cache_install` checks SHA256SUMS and the manifest, hashes every file
against the manifest and the whole tar against SHA256SUMS and, with `sync: true` (the default), flushes every
file and directory of each model to disk (fsync) before swapping it into place; `sync: false` skips those
flushes (golden-image builds). `tar` verifies and flushes nothing. Machine: {machine()}.{chr(10) + args.note if args.note else ''}

| step | ours min s | ours median s | GB/s (median) | tar min s | tar median s | target | ratio of medians |
|---|---|---|---|---|---|---|---|
{row("pack: `cache_bundle` vs `tar -cf`", t['bundle'], t['tar_c'], gb, 1.10)}
{row("install: `cache_install` vs `tar -xf`", t['install'], t['tar_x'], gb, 1.5)}
{row("install: `cache_install` vs `tar -xf` then `sync -f`, both durable", t['install'], t['tar_x_sync'], gb, None)}
{row("install, `sync: false`: `cache_install` vs `tar -xf`", t['install_nosync'], t['tar_x'], gb, None)}

The flushes cost {m['install'] - m['install_nosync']:.2f} s here ({(m['install'] / m['install_nosync'] - 1) * 100:.0f} %).

Floors measured in the same run: sha256 through hashlib {hash_gbs:.2f} GB/s; sequential disk write with
fsync {disk_gbs:.2f} GB/s.

Re-install of the same bundle, nothing to do: {m['again_big']:.2f} s for {args.size_mib} MiB, {m['again_small']:.2f} s
for 20 MiB.

Peak memory (max RSS): `cache_bundle` {rss['bundle'] / 1024:.0f} MiB, `cache_install` {rss['install'] / 1024:.0f} MiB.

Raw runs (s): {', '.join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in t.items())}.
""")
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
