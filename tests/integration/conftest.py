"""Session-wide test hub and model repositories for the integration tests."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from support.mshub import MsHub, make_repo
from support.sample_models import MODEL, model_files
from support.sdk import ensure_sdk
from support.smallfs import mounted_tmpfs
from support.tls import ensure_tls

HERE = Path(__file__).resolve().parent


# pytest-xdist deals tests out in collection order (make integration: --no-loadscope-reorder): these modules, which
# hold the longest tests and tables, come first, longest first, so that none of them starts last and runs alone.
# Longest as they run on an idle machine: a module of a few tests of seconds each is not listed even when, started
# beside molecule's scenarios, it took a minute.
LONGEST_FIRST = ("test_node_systemd", "test_seed_models_fleet", "test_kill_loops", "test_secrets", "test_bad_input", "test_lying_hub",
                 "test_cache_install", "test_cache_bundle", "test_concurrent_runs", "test_hub_faults", "test_cache_audit_real_sdk",
                 "test_listing_cap")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        if item.path.parent != HERE:
            return -1  # not an integration test: left where it was
        module = item.path.stem
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    make_repo(root, MODEL, model_files(), tags=["v1.0"])
    return root


@pytest.fixture(scope="session")
def hub(hub_root):
    with MsHub(hub_root, redirect_threshold=1 << 20) as server:
        yield server


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    return ensure_tls(tmp_path_factory.mktemp("tls") / "certs")


@pytest.fixture(scope="session")
def tls_hub(hub_root, tls):
    """The same repositories over https, the only way SDKs up to 1.37 reach a hub."""
    with MsHub(hub_root, tls=tls.pair, redirect_threshold=1 << 20) as server:
        yield server


@pytest.fixture(scope="session")
def sdk():
    """ensure_sdk(version): each pinned SDK virtualenv is built once, then shared."""
    return ensure_sdk


@pytest.fixture
def small_fs(tmp_path):
    """A 20 MiB tmpfs of the test's own (needs root); unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "small", "20m") as mount:
        yield mount


@pytest.fixture
def open_dir():
    """A directory every user can reach (pytest's own tmp is private to root), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="modelseed-open-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
