"""Tree-form bundles end to end: modelscope_model -> cache_bundle format=tree -> cache_install src_files=copy|link|move,
judged by the real SDKs offline; bad trees refused with the cache left as it was. Each call runs as a module process,
the way Ansible runs it on a host (without ansible-playbook's start-up for each batch of calls)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from support.judging import judge
from support.module_process import run_modules
from support.sample_models import MODEL

pytestmark = pytest.mark.slow

TREE = "Qwen--Qwen2.5-0.5B-Test--master"
MODEL_DIR = "models/Qwen/Qwen2___5-0___5B-Test"


def install(src, cache, src_files, **options):
    return {"modelseed.fleet.cache_install": {"src": str(src), "cache_dir": str(cache), "layout": "all", "src_files": src_files, **options}}


def inodes(top: Path) -> dict[str, int]:
    return {str(p.relative_to(top)): p.stat().st_ino for p in sorted(top.rglob("*")) if p.is_file()}


def break_tree(tree: Path, case: str):
    top = tree / TREE
    weight = next(p for p in sorted(top.rglob("*")) if p.is_file() and p.stat().st_size > 1000)
    if case == "sha256":
        data = bytearray(weight.read_bytes())
        data[len(data) // 2] ^= 1
        weight.unlink()  # a hard link to the staging cache: write a new file
        weight.write_bytes(bytes(data))
    elif case == "missing":
        weight.unlink()
    elif case == "extra":
        (top / "extra.bin").write_bytes(b"x")
    elif case == "manifest":
        doc = json.loads((tree / "manifest.json").read_text())
        doc["models"][0]["files"][0]["revision"] = "other"
        (tree / "manifest.json").write_text(json.dumps(doc))


BAD = {"sha256": "has sha256", "missing": "missing from", "extra": "not in the manifest", "manifest": "manifest.json has sha256"}


def test_tree_bundle_installs_by_move_link_and_copy_and_bad_trees_are_refused(tls_hub, tls, sdk, tmp_path):
    staging = tmp_path / "staging"
    bundle = tmp_path / "bundle"
    made = run_modules([
        {"modelseed.fleet.modelscope_model": {"name": MODEL, "cache_dir": str(staging), "endpoint": tls_hub.url,
                                              "ca_path": str(tls.ca), "layout": "all"}},
        {"modelseed.fleet.cache_bundle": {"cache_dir": str(staging), "dest": str(bundle), "format": "tree"}},
        {"modelseed.fleet.cache_bundle": {"cache_dir": str(staging), "dest": str(bundle), "format": "tree"}},
    ], tmp_path)
    assert not any(r.get("failed") for r in made), [r.get("msg") for r in made]
    assert made[1]["changed"] and made[1]["bytes_copied"] == 0, made[1]["msg"]
    assert "hard-linked" in made[1]["msg"] and not made[2]["changed"], made[2]["msg"]
    # hard links of the staging cache's files: no second copy on the staging host
    assert inodes(bundle / TREE).items() >= {k: v for k, v in inodes(staging / MODEL_DIR).items() if not k.startswith(".")}.items()

    trees = {}
    for name in ["move", "link", "copy"] + sorted(BAD):
        trees[name] = tmp_path / f"tree-{name}"  # copies of the tree, on the caches' file system
        shutil.copytree(bundle, trees[name])
        if name in BAD:
            break_tree(trees[name], name)
    linked = inodes(trees["link"] / TREE)
    caches = {name: tmp_path / f"cache-{name}" for name in trees}
    tasks = [install(trees[name], caches[name], name) for name in ("move", "link", "copy")]
    tasks += [install(trees[name], caches[name], "move") for name in sorted(BAD)]
    tasks.append(install(trees["move"], caches["move"], "move"))  # nothing to do: the tree is not read
    run = run_modules(tasks, tmp_path)
    for result, name in zip(run[:3], ("move", "link", "copy"), strict=True):
        verb = {"move": "moved", "link": "hard-linked", "copy": "copied"}[name]
        assert result["changed"] and not result.get("failed") and verb in result["msg"], result["msg"]
    for result, name in zip(run[3:-1], sorted(BAD), strict=True):
        assert result.get("failed") and BAD[name] in result["msg"], (name, result["msg"])
        assert "no model in the cache was changed" in result["msg"] or name == "manifest", result["msg"]
        cache = caches[name]
        assert not (cache / MODEL_DIR).exists() and not list(cache.glob(".modelseed/records/*"))
        assert not list(cache.glob(".modelseed/incoming/*")) and not list(cache.glob("hub/*"))
    assert not run[-1]["changed"] and not run[-1].get("failed"), run[-1]["msg"]

    # move consumed the tree's files; link left them, the very inodes, in the cache and the tree
    assert not any(p.is_file() and p.name not in (".msc", ".mdl", ".mv") for p in (trees["move"] / TREE).rglob("*"))
    assert inodes(caches["link"] / MODEL_DIR).items() >= {k: v for k, v in linked.items() if not k.startswith(".")}.items()
    assert inodes(trees["link"] / TREE) == linked
    for name, version in (("move", "1.40.2"), ("link", "1.37.1"), ("copy", "1.15.0")):
        judge(sdk(version), caches[name], tls_hub, tls, online=False)
    for path in (caches["move"] / MODEL_DIR).rglob("*"):
        if path.is_file() and path.name not in (".msc", ".mdl", ".mv"):
            copied = caches["copy"] / MODEL_DIR / path.relative_to(caches["move"] / MODEL_DIR)
            assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(copied.read_bytes()).digest()
