"""Caches written by modelscope_model, judged by the real modelscope SDK of each generation.

A cache passes when the SDK finds every file offline (local_files_only=True) with the right
bytes, and an online snapshot_download against the hub downloads nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from support.judging import READERS, judge
from support.playbook import run_tasks
from support.sample_models import MODEL
from support.table_play import Row, run_table

# One worker: the caches the module seeds, which every test here copies, are then seeded once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("seeded caches")]


def seed_task(tls_hub, tls, cache, **options) -> dict:
    return {"modelseed.fleet.modelscope_model": {
        "name": MODEL, "cache_dir": str(cache), "endpoint": tls_hub.url, "ca_path": str(tls.ca), **options}}


@pytest.fixture(scope="module")
def seeded(tls_hub, tls, tmp_path_factory):
    """One cache per layout, seeded once, all in one play; each test judges a copy, since SDKs write into caches."""
    caches = {layout: tmp_path_factory.mktemp(f"seeded-{layout}") / "cache" for layout in READERS}
    run = run_tasks([seed_task(tls_hub, tls, cache, layout=layout) for layout, cache in caches.items()])
    for result in run.results:
        assert result["changed"] and not result.get("failed"), result.get("msg")
    return caches


def copy_cache(source, target):
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)  # keeps links, modes and mtimes
    return target


@pytest.mark.parametrize("layout, version", [(layout, v) for layout, versions in READERS.items() for v in versions])
def test_sdk_finds_every_file_and_downloads_nothing(seeded, tls_hub, tls, sdk, tmp_path, layout, version):
    cache = copy_cache(seeded[layout], tmp_path / "cache")
    judge(sdk(version), cache, tls_hub, tls)


def test_dotted_name_link_stays_relative(seeded, tls_hub, tls, sdk, tmp_path):
    cache = copy_cache(seeded["models"], tmp_path / "cache")
    judge(sdk("1.37.1"), cache, tls_hub, tls)
    # 1.37 would have made an absolute link here; it keeps the relative one that is already there.
    link = cache / "models/Qwen/Qwen2.5-0.5B-Test"
    assert link.is_symlink() and str(link.readlink()) == "Qwen2___5-0___5B-Test"


AUTO_LAYOUTS = [
    (("1.37.1",), "models"),
    (("1.40.2",), "snapshots"),
    (("1.15.0", "1.40.2"), "all"),
]


@pytest.fixture(scope="module")
def auto_rows(tls_hub, tls, sdk, tmp_path_factory) -> tuple[dict[tuple[str, ...], Row], dict[tuple[str, ...], Path]]:
    """A download with layout=auto for each set of serving SDKs of AUTO_LAYOUTS into a cache of its own, in one play
    (the module's tests share one worker): (rows, each row's cache)."""
    caches = {versions: tmp_path_factory.mktemp("auto") / "cache" for versions, _layout in AUTO_LAYOUTS}
    tasks = {versions: seed_task(tls_hub, tls, caches[versions], layout="auto", sdk_pythons=[str(sdk(v).python) for v in versions])
             for versions, _layout in AUTO_LAYOUTS}
    return run_table(tasks), caches


@pytest.mark.parametrize("versions, layout", AUTO_LAYOUTS)
def test_auto_layout_follows_the_serving_sdks(auto_rows, tls_hub, tls, sdk, versions, layout):
    rows, caches = auto_rows
    result = rows[versions].result
    assert result["changed"] and not result.get("failed"), result.get("msg")
    assert result["layout"] == layout
    assert sorted(found["version"] for found in result["sdks_found"]) == sorted(versions)
    for version in versions:
        judge(sdk(version), caches[versions], tls_hub, tls)


def test_moved_cache_still_loads(seeded, tls_hub, tls, sdk, tmp_path):
    """Only relative links: the cache works from wherever it is moved to."""
    moved = tmp_path / "elsewhere" / "cache"
    moved.parent.mkdir()
    shutil.copytree(seeded["all"], moved, symlinks=True)
    for version in READERS["all"]:
        judge(sdk(version), moved, tls_hub, tls)
