"""Caches written by the real SDKs 1.15, 1.37 and 1.40 pass the hostile-world cache audit, and the same caches
with one weight file gone do not: the audit reads each generation's layout the way the SDK writes it."""

from __future__ import annotations

import shutil

import pytest

from support.cache_audit import audit_cache, hub_versions
from support.sample_models import MODEL
from support.sdk import VERSIONS

# One worker: the session's SDK downloads, which every test here reads, then happen once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real SDK caches")]

WEIGHT = "weights/model-00001.bin"
# Where each SDK left the model, relative to MODELSCOPE_CACHE.
MODEL_DIR = {
    "1.15.0": "hub/Qwen/Qwen2___5-0___5B-Test",
    "1.37.1": "models/Qwen/Qwen2___5-0___5B-Test",
    "1.40.2": "models/Qwen--Qwen2.5-0.5B-Test/snapshots/master",
}


@pytest.fixture(scope="session")
def sdk_caches(sdk, hub, tls_hub, tls, tmp_path_factory):
    """{name: cache root}: one cache per SDK, and one cache all three wrote into in turn."""
    root = tmp_path_factory.mktemp("sdk-caches")
    caches = {}
    for version in VERSIONS:
        env = sdk(version)
        server = tls_hub if env.legacy else hub
        for name in (version, "shared"):
            result = env.snapshot(MODEL, root / name, server, ca_bundle=tls.ca, revision="master")
            assert result.ok, (version, name, result.error, result.stderr[-2000:])
        caches[version] = root / version
    caches["shared"] = root / "shared"
    return caches


@pytest.mark.parametrize("name", [*VERSIONS, "shared"])
def test_a_cache_the_sdk_wrote_passes(sdk_caches, hub_root, name):
    assert audit_cache(sdk_caches[name], MODEL, *hub_versions(hub_root, MODEL)) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_the_same_cache_missing_a_file_fails(sdk_caches, hub_root, tmp_path, version):
    cache = tmp_path / "cache"
    shutil.copytree(sdk_caches[version], cache, symlinks=True)
    (cache / MODEL_DIR[version] / WEIGHT).unlink()
    problems = audit_cache(cache, MODEL, *hub_versions(hub_root, MODEL))
    assert f"{MODEL_DIR[version]}/{WEIGHT}: missing" in problems, problems
