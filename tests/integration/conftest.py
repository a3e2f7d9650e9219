"""Session-wide test hub and model repositories for the integration tests."""

from __future__ import annotations

import pytest

from support.mshub import MsHub, make_repo
from support.sample_models import MODEL, model_files


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    make_repo(root, MODEL, model_files(), tags=["v1.0"])
    return root


@pytest.fixture(scope="session")
def hub(hub_root):
    with MsHub(hub_root, redirect_threshold=1 << 20) as server:
        yield server
