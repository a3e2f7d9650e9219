"""Full bundle vs delta bundle for a new revision that changes one small file: bytes carried, time to write, time to
install on a node that holds the revision before.

    python tools/bench/delta.py [--runs 3] [--size-mib 1024] [--files 4] [--note TEXT]
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from common import REPORT, WORK, drop_tree, machine, run_module, summary, write_section

from support.mshub import MsHub, make_repo, push_commit, tag

MODEL = "bench/model-delta"
NEW_CONFIG = b'{"model_type": "bench", "rope_theta": 1000000}'


def hub_repo(root: Path, size_mib: int, files: int) -> None:
    """MODEL at tag v1 (``files`` random shards and a config) and v2 (the config changed), made once."""
    if (root / MODEL).exists():
        return
    make_repo(root, MODEL, {"config.json": b'{"model_type": "bench"}'}, versioned=True)
    shard = (size_mib << 20) // files
    for i in range(files):  # one shard in memory at a time
        push_commit(root, MODEL, {f"model-{i + 1:05d}-of-{files:05d}.safetensors": os.urandom(shard)})
    tag(root, MODEL, "v1")
    push_commit(root, MODEL, {"config.json": NEW_CONFIG}, tags=["v2"])


def bundle(cache: Path, dest: Path, revision: str, **options) -> tuple[float, dict]:
    drop_tree(dest)
    seconds, result, _rss = run_module("cache_bundle", {"cache_dir": str(cache), "dest": str(dest),
                                                        "models": [{"name": MODEL, "revision": revision}], **options}, WORK)
    return seconds, result


def install(src: Path, template: Path, target: Path) -> tuple[float, dict]:
    """Install ``src`` on a copy of ``template`` (a node holding v1)."""
    drop_tree(target)
    subprocess.run(["cp", "-a", str(template), str(target)], check=True)
    subprocess.run(["sync"], check=True)
    seconds, result, _rss = run_module("cache_install", {"src": str(src), "cache_dir": str(target), "layout": "models"}, WORK)
    return seconds, result


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--note", default="", help="a sentence about the run added to the report (a busy machine, a quick size)")
    args = parser.parse_args()
    hub_root, cache = WORK / f"delta-hub-{args.size_mib}m", WORK / f"delta-staged-{args.size_mib}m"
    hub_repo(hub_root, args.size_mib, args.files)
    with MsHub(hub_root) as hub:
        for revision in ("v1", "v2"):
            run_module("modelscope_model", {"name": MODEL, "revision": revision, "cache_dir": str(cache), "endpoint": hub.url,
                                            "layout": "snapshots"}, WORK)
    base, full, delta = WORK / "delta-base", WORK / "delta-full", WORK / "delta-delta"
    template, target = WORK / "delta-node-v1", WORK / "delta-node"
    bundle(cache, base, "v1")
    base_manifest = WORK / "delta-base-manifest.json"
    base_manifest.write_bytes((base / "manifest.json").read_bytes())
    drop_tree(template)
    run_module("cache_install", {"src": str(base), "cache_dir": str(template), "layout": "models"}, WORK)
    t: dict[str, list[float]] = {k: [] for k in ("bundle_full", "bundle_delta", "install_full", "install_delta")}
    sizes: dict[str, int] = {}
    for run in range(args.runs):
        order = ("full", "delta") if run % 2 == 0 else ("delta", "full")  # alternate who goes first
        for kind in order:
            seconds, _result = bundle(cache, full if kind == "full" else delta, "v2",
                                      **({"base_manifest": str(base_manifest)} if kind == "delta" else {}))
            t[f"bundle_{kind}"].append(seconds)
        for kind in order:
            seconds, result = install(full if kind == "full" else delta, template, target)
            t[f"install_{kind}"].append(seconds)
            sizes[f"installed_{kind}"] = result["bytes_installed"]
    for kind, path in (("full", full), ("delta", delta)):
        sizes[kind] = dir_bytes(path)
    drop_tree(target)
    cell = {k: f"{summary(v)[0]:.2f} / {summary(v)[1]:.2f}" for k, v in t.items()}
    write_section("delta", f"""## Full bundle vs delta bundle

A {args.size_mib} MiB model in {args.files} shards and a config; its new revision changes only the config
({len(NEW_CONFIG)} bytes). The full bundle of the new revision is written with `cache_bundle`; the delta with
`cache_bundle` and `base_manifest` (the manifest of the bundle of the revision before). Both are installed with
`cache_install` (layout `models`, `sync: true`) on a copy of a node cache that holds the revision before, made
with `cp -a` before each run and not timed. Each tool runs as a separate process ({args.runs} runs, the order
alternating); min and median. Machine: {machine()}.{(' ' + args.note) if args.note else ''}

| | full bundle | delta bundle |
|---|---|---|
| bundle directory, bytes | {sizes['full']} | {sizes['delta']} |
| bytes of files the install writes (`bytes_installed`) | {sizes['installed_full']} | {sizes['installed_delta']} |
| write the bundle, min / median s | {cell['bundle_full']} | {cell['bundle_delta']} |
| install it, min / median s | {cell['install_full']} | {cell['install_delta']} |

The delta install hard-links the unchanged shards from the installed revision: no byte of them is read or written.
Writing the delta reads only the changed file: the sha256 of the others comes from the staging cache's records.

Raw runs (s): {', '.join(f"{k}: {', '.join(f'{x:.2f}' for x in v)}" for k, v in t.items())}.
""")
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
