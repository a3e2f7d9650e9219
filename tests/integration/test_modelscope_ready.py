"""modelscope_ready: the real SDKs load seeded models offline, as the runtime user, or say why not."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from support.playbook import run_tasks
from support.sample_models import MODEL

pytestmark = pytest.mark.slow
VERSIONS = ("1.15.0", "1.37.1", "1.40.2")


@pytest.fixture(scope="module")
def pythons(sdk):
    return {version: str(sdk(version).python) for version in VERSIONS}


def seed(hub, cache, layout):
    task = {"modelseed.fleet.modelscope_model": {"name": MODEL, "cache_dir": str(cache), "endpoint": hub.url, "layout": layout}}
    assert not run_tasks([task])[0].get("failed")


def ready_task(cache, pythons, **options):
    return {"modelseed.fleet.modelscope_ready": {
        "models": [{"name": MODEL}], "pythons": list(pythons), "cache_dir": str(cache), **options}}


def test_every_generation_loads_an_all_layout_cache(hub, pythons, tmp_path):
    seed(hub, tmp_path / "cache", "all")
    result = run_tasks([ready_task(tmp_path / "cache", [*pythons.values(), "/nonexistent/python"])])[0]
    assert result["ready"] and not result["changed"], result["msg"]
    assert sorted(r["version"] for r in result["sdks"]) == sorted(VERSIONS)
    assert result["without_sdk"] == ["/nonexistent/python"]


def test_a_generation_that_cannot_read_the_layout_is_reported(hub, pythons, tmp_path):
    seed(hub, tmp_path / "cache", "snapshots")
    run = run_tasks([ready_task(tmp_path / "cache", [pythons["1.37.1"], pythons["1.40.2"]]),
                     ready_task(tmp_path / "cache", [pythons["1.37.1"]], fail_when_not_ready=True)])
    by_version = {r["version"]: r for r in run[0]["sdks"]}
    assert by_version["1.40.2"]["ready"] and not by_version["1.37.1"]["ready"]
    assert not run[0]["ready"] and "1.37.1" in run[0]["msg"]
    assert run[1]["failed"]
    # 1.37's miss left models/<owner>/<escaped>/.mdl, which would hide the snapshot from 1.40: removed.
    assert run[0]["stray_dirs_removed"] == [str(tmp_path / "cache/models/Qwen/Qwen2___5-0___5B-Test")]
    assert not (tmp_path / "cache/models/Qwen/Qwen2___5-0___5B-Test").exists()


@pytest.fixture
def public_dir():
    """A directory other users can reach (pytest's own tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="modelseed-ready-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_runtime_user_needs_write_access_on_old_sdks(hub, pythons, public_dir):
    cache = public_dir / "cache"
    seed(hub, cache, "all")
    subprocess.run(["chmod", "-R", "a+rX", str(cache)], check=True)
    result = run_tasks([ready_task(cache, [pythons["1.37.1"], pythons["1.40.2"]], user="nobody")])[0]
    by_version = {r["version"]: r for r in result["sdks"]}
    # 1.40 reads a root-owned cache; 1.37 must write .mdl and <cache>/.lock, and says so.
    assert by_version["1.40.2"]["ready"], by_version["1.40.2"]
    assert not by_version["1.37.1"]["ready"] and "Permission" in result["msg"]
