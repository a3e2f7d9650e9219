"""Which revision an application gets when it names none, and that the cache seeded for it serves it.

The hub has an old tag, v1.0 (before SDK 1.15.0 was released), a master with other bytes, and a tag on master
made after every pinned SDK was released. Asked for no revision, snapshot_download of 1.15 takes the newest tag
made before its own release date (v1.0); 1.37 and 1.40 take master; model_file_download of 1.15 and 1.40 take
that tag again, of 1.37 master. One cache is seeded at v1.0, one at master (the modules' default), each in every
layout `all`, and one holds both in layout `snapshots`. Each must answer the applications that ask for its revision
online with zero downloads and with the bytes of that revision, which proves both the rule and the seeding. A cache
seeded at the other revision does not.
"""

from __future__ import annotations

import calendar
import hashlib
import shutil

import pytest

from support.mshub import MsHub, make_repo, push_commit
from support.playbook import run_tasks
from support.sdk import ensure_sdk

# One worker: the dated hub and the caches every test here reads are then seeded once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dated revisions")]

MODEL = "Rev/Dated-0.5B"
TAG = "v1.0"
LATE_TAG = "v2.0"
FILE = "config.json"


def day(text: str) -> int:
    return calendar.timegm(tuple(int(p) for p in text.split("-")) + (12, 0, 0))


# Release dates in modelscope/version.py: 1.15.0 2024-06-05, 1.37.1 2026-05-20, 1.40.2 2026-10-09.
TAG_DAY, MASTER_DAY = day("2024-01-15"), day("2026-11-02")
AT_TAG = {FILE: '{"model_type": "qwen2", "version": 1}\n', "weights.bin": "old weights\n", "tokenizer.json": "{}\n"}
AT_MASTER = {**AT_TAG, FILE: '{"model_type": "qwen2", "version": 2}\n', "weights.bin": "new weights, other bytes\n"}
# Where each SDK reads the model, relative to MODELSCOPE_CACHE, in the caches of layout `all` (a `models` directory
# and a `hub` link to it: 1.38+ reuse that directory for whatever revision they ask) and of layout `snapshots`.
MODEL_DIR = {
    ("1.15.0", "all"): "hub/Rev/Dated-0___5B",
    ("1.37.1", "all"): "models/Rev/Dated-0___5B",
    ("1.40.2", "all"): "models/Rev/Dated-0___5B",
    ("1.40.2", "snapshots"): "models/Rev--Dated-0.5B/snapshots/{revision}",
}
# (SDK, call, revision it resolves to when given none, layout of the cache asked)
APPLICATIONS = [
    ("1.15.0", "snapshot_download", TAG, "all"),
    ("1.15.0", "model_file_download", TAG, "all"),
    ("1.37.1", "snapshot_download", "master", "all"),
    ("1.37.1", "model_file_download", "master", "all"),
    ("1.40.2", "snapshot_download", "master", "all"),
    ("1.40.2", "model_file_download", TAG, "all"),
    ("1.40.2", "snapshot_download", "master", "snapshots"),
    ("1.40.2", "model_file_download", TAG, "snapshots"),
]
# Traffic for any host but the loopback hub goes to a closed local port: an SDK that looked for its default
# endpoint would fail here rather than leave the machine.
NO_EGRESS = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"}


def digests(files: dict[str, str]) -> dict[str, str]:
    return {path: hashlib.sha256(data.encode()).hexdigest() for path, data in files.items()}


@pytest.fixture(scope="module")
def dated(tmp_path_factory, tls):
    """The dated repository on a hub of its own (http for the module and 1.40, https for older SDKs), and two caches
    seeded by one playbook run: at the tag and with no revision given."""
    root = tmp_path_factory.mktemp("dated")
    make_repo(root / "hub", MODEL, AT_TAG, tags=[TAG], created_at=TAG_DAY, message="first release")
    push_commit(root / "hub", MODEL, AT_MASTER, tags=[LATE_TAG], created_at=MASTER_DAY, message="new weights")
    with MsHub(root / "hub") as http_hub, MsHub(root / "hub", tls=tls.pair) as https_hub:
        base = {"name": MODEL, "endpoint": http_hub.url}
        run = run_tasks([{"modelseed.fleet.modelscope_model": {**base, **args}} for args in (
            {"layout": "all", "revision": TAG, "cache_dir": str(root / "all-at-tag")},
            {"layout": "all", "cache_dir": str(root / "all-at-master")},
            {"layout": "snapshots", "revision": TAG, "cache_dir": str(root / "snapshots")},
            {"layout": "snapshots", "cache_dir": str(root / "snapshots")},
            {"layout": "all", "revision": TAG, "cache_dir": str(root / "all-twice")},
            {"layout": "all", "cache_dir": str(root / "all-twice")},
        )])
        assert not any(r.get("failed") for r in run.results), [r.get("msg") for r in run.results]
        yield {"http": http_hub, "https": https_hub, "root": root, "seeded": run.results}


def test_hub_dates_its_tags(dated):
    revisions = dated["http"].store.repo("Rev", "Dated-0.5B")
    assert [(t.name, t.created_at) for t in revisions.tags()] == [(LATE_TAG, MASTER_DAY), (TAG, TAG_DAY)]
    assert [(b.name, b.created_at) for b in revisions.branches()] == [("master", MASTER_DAY)]


def test_modules_default_to_master(dated):
    at_tag, at_master, snapshot_tag, snapshot_master = dated["seeded"][:4]
    assert at_tag["revision"] == snapshot_tag["revision"] == TAG
    assert at_master["revision"] == snapshot_master["revision"] == "master"
    assert at_tag["commit"] == snapshot_tag["commit"] != at_master["commit"] == snapshot_master["commit"]


def test_layout_all_holds_one_revision_per_root(dated):
    """Seeding master where v1.0 was replaces it: the directory of SDKs up to 1.37 has no revision in its path."""
    first, second = dated["seeded"][4:]
    assert second["changed"] and first["path"] == second["path"]
    model_dir = dated["root"] / "all-twice" / "models/Rev/Dated-0___5B"
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in model_dir.iterdir() if p.name in AT_TAG}
    assert on_disk == digests(AT_MASTER)
    assert (model_dir / ".mv").read_text().startswith("Revision:master,")


@pytest.mark.parametrize("version, call, wanted, layout", APPLICATIONS, ids=[f"{v}-{c}-{la}" for v, c, _w, la in APPLICATIONS])
def test_cache_seeded_at_the_revision_an_application_asks_for_serves_it(dated, tls, version, call, wanted, layout):
    sdk = ensure_sdk(version)
    hub = dated["https" if sdk.legacy else "http"]
    cache = dated["root"] / ("snapshots" if layout == "snapshots" else "all-at-tag" if wanted == TAG else "all-at-master")
    mark = len(hub.log)
    result = sdk.snapshot(MODEL, cache, hub, ca_bundle=tls.ca, extra_env=NO_EGRESS, file=FILE if call == "model_file_download" else None)
    assert result.ok, result.error + result.stderr[-2000:]
    assert hub.log.downloads(mark) == {}, hub.log.api_calls(mark)
    assert result.dir == str(cache / MODEL_DIR[version, layout].format(revision=wanted))
    files = {path: info["sha256"] for path, info in result.files.items() if path in AT_TAG}
    assert files == digests(AT_TAG if wanted == TAG else AT_MASTER)


@pytest.mark.parametrize("version, seeded", [("1.15.0", "all-at-master"), ("1.40.2", "all-at-tag")])
def test_cache_seeded_at_another_revision_does_not_serve(dated, tls, tmp_path, version, seeded):
    """The rule matters: snapshot_download given the cache seeded at the other revision fetches the bytes that differ
    (1.40 into the `models` directory it reuses, so that cache then holds the other revision)."""
    sdk = ensure_sdk(version)
    hub = dated["https" if sdk.legacy else "http"]
    cache = shutil.copytree(dated["root"] / seeded, tmp_path / "cache", symlinks=True)
    mark = len(hub.log)
    result = sdk.snapshot(MODEL, cache, hub, ca_bundle=tls.ca, extra_env=NO_EGRESS)
    assert result.ok, result.error
    assert set(hub.log.downloads(mark)) == {FILE, "weights.bin"}
    assert result.dir == str(cache / MODEL_DIR[version, "all"])
    # The one model directory now holds the revision this SDK asked for, no longer the one seeded.
    files = {path: info["sha256"] for path, info in result.files.items() if path in AT_TAG}
    assert files == digests(AT_MASTER if seeded == "all-at-tag" else AT_TAG)
