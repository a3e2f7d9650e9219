"""Models with more files than the hub lists in one answer (3000 entries, cut without a word).

Files nested below several directories are recovered with Root-scoped listings and downloaded whole, as the
real SDK 1.40.2 downloads them from the same hub (so the test hub cuts its listings as the real one does). One
directory with more direct entries than the cap cannot be listed whole: that fails, and leaves no SDK metadata
or record that would call a partial model complete.
"""

from __future__ import annotations

import hashlib
import pickle

import pytest

from support.mshub import MsHub, make_repo
from support.playbook import run_tasks
from support.sdk import ensure_sdk

NESTED = "Cap/Nested-3500"  # 3,500 files in five directories, two levels deep: the whole tree is over the cap
WIDE = "Cap/Wide-3500"  # 3,500 files directly in one directory

NESTED_FILES = {
    **{f"layers/{layer:02d}/part-{i:03d}.json": f"{layer}.{i}\n" for layer in range(2) for i in range(1500)},
    **{f"tokenizer/{i:03d}.txt": f"t{i}\n" for i in range(499)},
    "config.json": '{"model_type": "qwen2"}\n',
}
WIDE_FILES = {"config.json": "{}\n", **{f"shards/{i:04d}.bin": f"s{i}\n" for i in range(3499)}}
METADATA = {".msc", ".mdl", ".mv"}

# One worker: the module's hub and its two downloads of 3,500 files each then happen once.
pytestmark = pytest.mark.xdist_group("listing cap")


def digests(files: dict[str, str]) -> dict[str, str]:
    return {path: hashlib.sha256(data.encode()).hexdigest() for path, data in files.items()}


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """The hub with both models, and one playbook run downloading each into a cache of its own."""
    root = tmp_path_factory.mktemp("capped")
    # Versioned: the hub then finds the tree of a commit id without hashing the whole model for each file.
    make_repo(root / "hub", NESTED, NESTED_FILES, versioned=True)
    make_repo(root / "hub", WIDE, WIDE_FILES, versioned=True)
    with MsHub(root / "hub") as hub:
        tasks = [{"modelseed.fleet.modelscope_model": {"name": model, "cache_dir": str(root / cache), "endpoint": hub.url, "layout": "all"}}
                 for model, cache in ((NESTED, "nested"), (WIDE, "wide"))]
        nested, wide = run_tasks(tasks).results
        yield hub, root, nested, wide


def test_model_nested_beyond_the_cap_is_downloaded_whole(capped):
    _hub, root, nested, _wide = capped
    assert not nested.get("failed"), nested.get("msg")
    assert nested["files"] == len(NESTED_FILES) == 3500
    model_dir = root / "nested" / "models/Cap/Nested-3500"
    assert nested["path"] == str(model_dir)
    on_disk = {p.relative_to(model_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in model_dir.rglob("*") if p.is_file() and p.name not in METADATA}
    assert on_disk == digests(NESTED_FILES)
    # The metadata SDKs up to 1.37 trust names every file.
    assert {entry["Path"] for entry in pickle.loads((model_dir / ".msc").read_bytes())} == set(NESTED_FILES)


@pytest.mark.slow
def test_real_sdk_downloads_the_nested_model_whole_from_the_same_hub(capped, tmp_path):
    hub, _root, _nested, _wide = capped
    result = ensure_sdk("1.40.2").snapshot(NESTED, tmp_path / "cache", hub)
    assert result.ok, result.error
    assert {path: info["sha256"] for path, info in result.files.items()} == digests(NESTED_FILES)


def test_one_directory_beyond_the_cap_fails_and_calls_nothing_complete(capped):
    _hub, root, _nested, wide = capped
    assert wide.get("failed"), wide.get("msg")
    assert wide["msg"].startswith(f"directory shards of {WIDE} holds 3000 or more entries, more than the hub lists in one answer"), wide["msg"]
    cache = root / "wide"
    assert not [p for p in cache.rglob("*") if p.name in METADATA]
    assert not list((cache / ".modelseed" / "records").glob("*"))
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix in (".bin", ".json")]
