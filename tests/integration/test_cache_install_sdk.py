"""Caches written by cache_install, judged by the real modelscope SDK of each generation.

The bundle is built by tests/support/bundles.py from the hub's own listing (commit, time, per-file
revisions), with no layout of its own: the installer writes whichever layout it is asked for. A cache
passes when the SDK finds every file offline with the right bytes and an online run downloads nothing.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import pytest

from support.bundles import spec_from_hub, write_bundle
from support.judging import READERS, judge
from support.playbook import run_tasks
from support.sample_models import MODEL, model_files
from support.sdk import VERSIONS
from support.table_play import Row, run_table, table_play

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tls_hub, tls, tmp_path_factory):
    spec = spec_from_hub(tls_hub.url, MODEL, model_files(), ca_path=str(tls.ca))
    return write_bundle(tmp_path_factory.mktemp("sdk-bundle") / "bundle", [spec])


def install_task(bundle, cache, **options) -> dict:
    return {"modelseed.fleet.cache_install": {"src": str(bundle), "cache_dir": str(cache), **options}}


def installed(result: dict) -> dict:
    assert result["changed"] and not result.get("failed"), result.get("msg")
    return result


def install(bundle, cache, **options):
    return installed(run_tasks([install_task(bundle, cache, **options)])[0])


READER_ROWS = [(layout, v) for layout, versions in READERS.items() for v in versions]


@pytest.fixture(scope="module")
def reader_rows(bundle, tmp_path_factory) -> tuple[dict[tuple[str, str], Row], dict[tuple[str, str], Path]]:
    """The bundle installed for each (layout, SDK) of READER_ROWS into a cache of its own (SDKs write into the caches
    they load), in one play: (rows, each row's cache)."""
    caches = {row: tmp_path_factory.mktemp(f"reader-{row[0]}-{row[1]}") / "cache" for row in READER_ROWS}
    return run_table({row: install_task(bundle, caches[row], layout=row[0]) for row in READER_ROWS}), caches


@table_play("cache_install: every SDK reads its layout")
@pytest.mark.parametrize("layout, version", READER_ROWS)
def test_sdk_finds_every_file_and_downloads_nothing(reader_rows, tls_hub, tls, sdk, layout, version):
    rows, caches = reader_rows
    result = installed(rows[layout, version].result)
    assert result["layout"] == layout
    judge(sdk(version), caches[layout, version], tls_hub, tls)


def test_auto_layout_with_every_sdk_serves_them_all(bundle, tls_hub, tls, sdk, tmp_path):
    envs = [sdk(v) for v in VERSIONS]
    cache = tmp_path / "cache"
    result = install(bundle, cache, layout="auto", sdk_pythons=[str(e.python) for e in envs])
    assert result["layout"] == "all"
    assert sorted(found["version"] for found in result["sdks_found"]) == sorted(VERSIONS)
    for env in envs:
        judge(env, cache, tls_hub, tls)
    # What the SDKs wrote into the cache (.mdl, .mv, scratch dirs) is no reason to reinstall.
    again = run_tasks([{"modelseed.fleet.cache_install": {"src": str(bundle), "cache_dir": str(cache), "layout": "all"}}])[0]
    assert again["changed"] is False, again["msg"]


@pytest.fixture(scope="module")
def shared_rows(bundle) -> tuple[dict[str, Row], dict[str, Path]]:
    """For each SDK, the bundle installed root-owned and shared with group nogroup into a directory every user can
    reach (pytest's own tmp is private to root), in one play: (rows, each version's directory), removed afterwards."""
    dirs = {version: Path(tempfile.mkdtemp(prefix="modelseed-open-")) for version in VERSIONS}
    try:
        for path in dirs.values():
            path.chmod(0o755)
        tasks = {version: install_task(bundle, path / "cache", layout="all", owner="root", group="nogroup", shared=True)
                 for version, path in dirs.items()}
        yield run_table(tasks), dirs
    finally:
        for path in dirs.values():
            shutil.rmtree(path, ignore_errors=True)


@table_play("cache_install: shared with the runtime user")
@pytest.mark.parametrize("version", VERSIONS)
def test_runtime_user_loads_a_shared_root_owned_cache(shared_rows, tls_hub, tls, sdk, version):
    """Root installs; `nobody` (group nogroup) loads offline and online, although SDKs up to 1.37 write into the cache."""
    rows, dirs = shared_rows
    open_dir = dirs[version]
    cache = open_dir / "cache"
    installed(rows[version].result)
    model_dir = cache / "models/Qwen/Qwen2___5-0___5B-Test"
    for name in (".mdl", ".mv"):
        assert (model_dir / name).stat().st_mode & 0o777 == 0o664  # group-writable, never world-writable
    assert (model_dir / ".msc").stat().st_mode & 0o777 == 0o644
    readable = dataclasses.replace(tls, ca=Path(shutil.copy(tls.ca, open_dir / "ca.pem")))  # nobody cannot read pytest's tmp
    judge(sdk(version), cache, tls_hub, readable, user="nobody")
    for path in cache.rglob("*"):
        if not path.is_symlink():
            assert not path.stat().st_mode & 0o002, f"{path} is world-writable"


def test_without_shared_an_old_sdk_cannot_load_as_another_user(bundle, tls_hub, tls, sdk, open_dir):
    """The control for the test above: a root-only cache defeats SDK 1.37 even offline, so `shared` is what makes it work."""
    cache = open_dir / "cache"
    install(bundle, cache, layout="models")
    offline = sdk("1.37.1").snapshot(MODEL, cache, tls_hub, local_files_only=True, ca_bundle=tls.ca, user="nobody")
    assert not offline.ok and "Permission" in (offline.error or "") + offline.stderr


def test_bundle_written_by_cache_bundle_installs_in_another_layout(tls_hub, tls, sdk, tmp_path):
    """The real pair: modelscope_model (snapshots) -> cache_bundle -> cache_install (hub) -> SDK 1.15."""
    source = tmp_path / "staging"
    seeded, made, result = run_tasks([
        {"modelseed.fleet.modelscope_model": {
            "name": MODEL, "cache_dir": str(source), "endpoint": tls_hub.url, "ca_path": str(tls.ca), "layout": "snapshots"}},
        {"modelseed.fleet.cache_bundle": {"cache_dir": str(source), "dest": str(tmp_path / "bundle")}},
        install_task(tmp_path / "bundle", tmp_path / "cache", layout="hub")]).results
    assert not seeded.get("failed"), seeded["msg"]
    assert not made.get("failed"), made["msg"]
    installed(result)
    judge(sdk("1.15.0"), tmp_path / "cache", tls_hub, tls)
