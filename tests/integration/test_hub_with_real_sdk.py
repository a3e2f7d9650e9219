"""The test hub against the real ModelScope SDKs, one of each cache generation.

Each SDK downloads a model into an empty cache (SDKs up to 1.37 over https, since that is all they
speak), gets the exact bytes, finds them again with local_files_only=True, and a second online run
downloads nothing.
"""

from __future__ import annotations

import hashlib
import random
import ssl
import urllib.error
import urllib.request

import pytest

from support.mshub import MsHub, make_repo
from support.sdk import VERSIONS, ensure_sdk

pytestmark = pytest.mark.slow

MODEL = "Qwen/Qwen2.5-0.5B-Test"
TOKEN = "test-token-0123456789"
REDIRECT_THRESHOLD = 1 << 20
BIG = "weights/shard 1/model-00001.safetensors"
FILES = {
    "config.json": '{"model_type": "qwen2"}\n',
    "tokenizer/vocab.json": '{"a": 0}\n',
    BIG: random.Random(7).randbytes(3 * REDIRECT_THRESHOLD),  # redirected to object storage
    "name with space.txt": "spaces in names\n",
    ".hidden/cfg.json": "{}\n",
    "pkg/__init__.py": "",
    ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
}
# Where each generation keeps the model, relative to MODELSCOPE_CACHE.
MODEL_DIR = {
    "1.15.0": "hub/Qwen/Qwen2___5-0___5B-Test",
    "1.37.1": "models/Qwen/Qwen2___5-0___5B-Test",
    "1.40.2": "models/Qwen--Qwen2.5-0.5B-Test/snapshots/{revision}",
}
METADATA = {".msc", ".mdl", ".mv"}  # written by SDKs up to 1.37


def expected_files(sdk) -> dict[str, dict]:
    # SDKs up to 1.37 drop .gitattributes from the listing; 1.38+ download it like any file.
    files = {p: c.encode() if isinstance(c, str) else c for p, c in FILES.items() if not (sdk.legacy and p == ".gitattributes")}
    return {p: {"size": len(c), "sha256": hashlib.sha256(c).hexdigest()} for p, c in files.items()}


def model_files(result) -> dict[str, dict]:
    return {p: v for p, v in result.files.items() if p not in METADATA}


@pytest.fixture(scope="session")
def served_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    make_repo(root, MODEL, FILES, tags=["v1.0"])
    return root


@pytest.fixture(scope="session")
def https_hub(served_root, tls):
    with MsHub(served_root, tls=tls.pair, redirect_threshold=REDIRECT_THRESHOLD) as server:
        yield server


@pytest.fixture(scope="session")
def http_hub(served_root):
    with MsHub(served_root, redirect_threshold=REDIRECT_THRESHOLD) as server:
        yield server


@pytest.fixture(scope="session")
def token_hub(served_root, tls):
    with MsHub(served_root, tls=tls.pair, token=TOKEN, redirect_threshold=REDIRECT_THRESHOLD) as server:
        yield server


@pytest.fixture(scope="session", params=VERSIONS)
def sdk(request):
    return ensure_sdk(request.param)


@pytest.fixture
def sdk_hub(sdk, request):
    return request.getfixturevalue("https_hub" if sdk.legacy else "http_hub")


def test_download_then_offline_then_nothing_new(sdk, sdk_hub, tls, tmp_path):
    cache = tmp_path / "cache"
    expected = expected_files(sdk)

    mark = len(sdk_hub.log)
    first = sdk.snapshot(MODEL, cache, sdk_hub, ca_bundle=tls.ca)
    assert first.ok, first.error + first.stderr[-2000:]
    assert first.dir == str(cache / MODEL_DIR[sdk.version].format(revision="master"))
    assert model_files(first) == expected
    fetched = sdk_hub.log.downloads(mark)
    assert set(fetched) <= set(expected) and set(fetched) >= {p for p, f in expected.items() if f["size"]}
    assert set(fetched.values()) == {1}
    big = [r for r in sdk_hub.log.entries(mark) if r.file == BIG]
    assert [r.status for r in big] == [302, 206 if sdk.legacy else 200]  # up to 1.37 always send a Range
    assert big[1].path.startswith("/oss/")

    mark = len(sdk_hub.log)
    offline = sdk.snapshot(MODEL, cache, sdk_hub, ca_bundle=tls.ca, local_files_only=True)
    assert offline.ok, offline.error
    assert offline.dir == first.dir
    assert model_files(offline) == expected
    assert sdk_hub.log.api_calls(mark) == []

    mark = len(sdk_hub.log)
    again = sdk.snapshot(MODEL, cache, sdk_hub, ca_bundle=tls.ca)
    assert again.ok, again.error
    assert again.dir == first.dir
    assert sdk_hub.log.downloads(mark) == {}, sdk_hub.log.api_calls(mark)


def test_tag(sdk, sdk_hub, tls, tmp_path):
    result = sdk.snapshot(MODEL, tmp_path / "cache", sdk_hub, ca_bundle=tls.ca, revision="v1.0")
    assert result.ok, result.error
    assert result.dir == str(tmp_path / "cache" / MODEL_DIR[sdk.version].format(revision="v1.0"))
    assert model_files(result) == expected_files(sdk)


def test_unknown_revision_is_reported(sdk, sdk_hub, tls, tmp_path):
    result = sdk.snapshot(MODEL, tmp_path / "cache", sdk_hub, ca_bundle=tls.ca, revision="no-such-tag")
    assert not result.ok
    assert "no-such-tag" in result.error or "404" in result.error, result.error


def test_unknown_model_is_reported(sdk, sdk_hub, tls, tmp_path):
    result = sdk.snapshot("Qwen/Absent", tmp_path / "cache", sdk_hub, ca_bundle=tls.ca)
    assert not result.ok


def test_connection_reset_mid_file_still_gives_exact_bytes(sdk, sdk_hub, tls, tmp_path):
    fault = sdk_hub.faults.add(action="reset", file=BIG, path="/oss/", after_bytes=REDIRECT_THRESHOLD, times=1)
    try:
        result = sdk.snapshot(MODEL, tmp_path / "cache", sdk_hub, ca_bundle=tls.ca)
    finally:
        sdk_hub.faults.clear()
    assert fault.hits == 1
    assert result.ok, result.error
    assert model_files(result) == expected_files(sdk)


def test_token_is_presented_on_every_api_call(sdk, token_hub, tls, tmp_path):
    mark = len(token_hub.log)
    result = sdk.snapshot(MODEL, tmp_path / "cache", token_hub, ca_bundle=tls.ca)
    assert result.ok, result.error
    model_calls = [r for r in token_hub.log.entries(mark) if r.path.startswith("/api/v1/models/")]
    assert model_calls and all(r.auth for r in model_calls)
    assert TOKEN not in result.stdout + result.stderr


def test_hub_refuses_api_calls_without_token(token_hub, tls):
    context = ssl.create_default_context(cafile=str(tls.ca))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{token_hub.url}/api/v1/models/{MODEL}/revisions", context=context)
    assert refused.value.code == 401
