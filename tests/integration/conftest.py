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
