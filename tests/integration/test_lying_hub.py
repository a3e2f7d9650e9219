"""modelscope_model against a hub whose answers are wrong on purpose: crafted listings and revision maps, bodies
that are not what they claim, connections that go silent.

Every lie must end in a failure that says what is wrong and names the model, with the cache byte for byte as it
was and nothing written beside it; a silent connection must be given up after the timeout, never waited on
for ever.
"""

from __future__ import annotations

import json
import random
from contextlib import ExitStack

import pytest
from integration.test_bad_input import copy_tree, judge_case, look, run_case

from support import reliability
from support.cache_audit import audit_cache, hub_versions
from support.interrupt import wait_until
from support.module_process import run_modules
from support.mshub import MsHub, make_repo
from support.playbook import run_tasks
from support.table_play import Row, run_table, table_play

pytestmark = pytest.mark.hostile

MODEL = "Liar/Tiny-0.5B"
FILES = {"config.json": b'{"model_type": "qwen2"}', "weights/model.bin": random.Random(7).randbytes(3 << 20)}
SHA = "ab" * 32
LISTING = "/repo/files"
REVISIONS = "/revisions"


@pytest.fixture(scope="module")
def liar(tmp_path_factory):
    """A hub of its own (faults never reach another test) and a cache that already holds the model."""
    root = tmp_path_factory.mktemp("liar")
    make_repo(root, MODEL, FILES, versioned=True)
    with MsHub(root) as hub:
        cache = root / "seeded"
        assert not run_modules([download(hub, cache)], tmp_path_factory.mktemp("liar-args"))[0].get("failed")
        yield hub, cache


def download(hub, cache, **options) -> dict:
    args = {"name": MODEL, "cache_dir": str(cache), "endpoint": hub.url, "layout": "all", "retries": 1, "retry_delay": 0, "timeout": 5,
            **options}
    return {"modelseed.fleet.modelscope_model": args}


def envelope(data) -> bytes:
    return json.dumps({"Code": 200, "Success": True, "Message": "success", "Data": data}).encode()


def blob(path, size=10, sha256=SHA, **extra) -> dict:
    return {"Path": path, "Name": str(path).rsplit("/", 1)[-1], "Type": "blob", "Size": size, "Sha256": sha256, "Revision": "c0", **extra}


def listing(*entries) -> bytes:
    return envelope({"Files": list(entries)})


def revisions(**ref) -> bytes:
    return envelope({"RevisionMap": {"Branches": [{"Revision": "master", "CommitId": "c" * 40, "CreatedAt": 1700000000, **ref}], "Tags": []}})


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


LIES = [
    # (case, URL path the lie answers, body, what the message must say)
    ("listed path ../escape", LISTING, listing(blob("../escape.bin")), "unsafe file name"),
    ("listed path /absolute", LISTING, listing(blob("/tmp/escape.bin")), "unsafe file name"),
    ("listed path a/../../x", LISTING, listing(blob("a/../../x")), "unsafe file name"),
    ("listed path with NUL", LISTING, listing(blob("a\u0000b")), "unsafe file name"),
    ("listed path .mdl", LISTING, listing(blob(".mdl")), "unsafe file name"),
    ("listed path a number", LISTING, listing(blob(12)), "unsafe file name"),
    ("file and directory at once", LISTING, listing(blob("a"), blob("a/b")), "both as a file and as a directory"),
    ("same file twice", LISTING, listing(blob("x.bin"), blob("x.bin")), "same file twice"),
    ("entry neither file nor directory", LISTING, listing(blob("x.bin"), {"Path": "vendor", "Type": "commit"}), "neither a file nor a directory"),
    ("size negative", LISTING, listing(blob("x.bin", size=-1)), "invalid size"),
    ("size a string", LISTING, listing(blob("x.bin", size="10")), "invalid size"),
    ("size of an exabyte", LISTING, listing(blob("x.bin", size=1 << 60)), "not enough space"),
    ("sha256 missing", LISTING, listing(blob("x.bin", sha256=None)), "without a sha256"),
    ("sha256 too short", LISTING, listing(blob("x.bin", sha256="abc")), "without a sha256"),
    ("files not a list", LISTING, envelope({"Files": "all of them"}), "no file listing"),
    ("data null", LISTING, envelope(None), "no file listing"),
    ("listing not JSON", LISTING, b"<html>maintenance</html>", "not JSON"),
    ("listing not UTF-8", LISTING, b"\xff\xfe{}", "not JSON"),
    ("listing nested 100000 deep", LISTING, nested(100_000), "not JSON"),
    ("success false", LISTING, json.dumps({"Code": 10010, "Success": False, "Message": "quota"}).encode(), "quota"),
    ("revision map a list", REVISIONS, envelope(["master"]), "unknown revision"),
    ("branches not a list", REVISIONS, envelope({"RevisionMap": {"Branches": "master"}}), "unknown revision"),
    ("commit id missing", REVISIONS, revisions(CommitId=None), "unknown revision"),
    ("revisions nested 100000 deep", REVISIONS, nested(100_000), "not JSON"),
]


def fault_class(where: str, message: str) -> str:
    """The row of the reliability report a lie is counted in."""
    if message == "not JSON":
        return "lying hub: answer that is not JSON"
    return "lying hub: crafted listing" if where == LISTING else "lying hub: crafted revision map"


@pytest.fixture(scope="module")
def lie_rows(liar, tmp_path_factory) -> dict[str, Row]:
    """Every lie, each told by a hub of its own on the liar's repositories to a copy of the seeded cache, in one play."""
    liar_hub, seeded = liar
    top = tmp_path_factory.mktemp("lies")
    works = {case: top / f"case-{index}" / "work" for index, (case, *_rest) in enumerate(LIES)}
    with ExitStack() as hubs:
        tasks = {}
        for case, where, body, _message in LIES:
            hub = hubs.enter_context(MsHub(liar_hub.store.root))
            hub.faults.add(action="reply", status=200, body=body, path=where)
            works[case].mkdir(parents=True)
            tasks[case] = download(hub, copy_tree(seeded, works[case] / "cache"))
        return run_table(tasks, lambda case: look(works[case]))


@table_play("lying hub: lies")
@pytest.mark.parametrize("case, where, body, message", LIES, ids=[case for case, *_rest in LIES])
def test_lie_fails_clearly_and_writes_nothing(lie_rows, case, where, body, message):
    result = judge_case(fault_class(where, message), lie_rows[case], message)
    assert MODEL in result["msg"], result["msg"]


def test_answer_larger_than_any_listing_is_refused(liar, tmp_path):
    """A JSON answer is read into memory: one beyond any real listing is refused, not read to the end."""
    hub, seeded = liar
    work = tmp_path / "work"
    work.mkdir()
    cache = copy_tree(seeded, work / "cache")
    body = envelope({"Files": [blob(f"f{i:07d}.bin") for i in range(700_000)]})
    assert len(body) > 64 << 20
    hub.faults.add(action="reply", status=200, body=body, path=LISTING)
    try:
        run_case("lying hub: answer larger than any listing", download(hub, cache), "larger than", work)
    finally:
        hub.faults.clear()


def test_truncated_listing_walk_that_loops_ends(liar, tmp_path):
    """A listing at the hub's cap makes the module walk directories one by one; a hub whose directory lists itself
    must not send it round for ever."""
    hub, seeded = liar
    work = tmp_path / "work"
    work.mkdir()
    cache = copy_tree(seeded, work / "cache")
    entries = [{"Path": "d", "Name": "d", "Type": "tree"}] + [blob(f"d/f{i:04d}.bin") for i in range(3000)]
    hub.faults.add(action="reply", status=200, body=listing(*entries), path=LISTING)
    try:
        run_case("lying hub: truncated listing whose directories loop", download(hub, cache), "holds 3000 or more entries", work)
    finally:
        hub.faults.clear()


def test_revision_dates_that_are_not_dates_do_not_matter(liar, tmp_path):
    """CreatedAt only goes into the .mv file: a hub that sends nonsense there still gives a complete, verified model."""
    liar_hub, _seeded = liar
    dates = ["yesterday", 1e300, -5, [1]]
    real = _get(liar_hub, f"/api/v1/models/{MODEL}/revisions")
    with ExitStack() as hubs:
        tasks = {}
        for index, created in enumerate(dates):
            answer = json.loads(real)
            for ref in answer["Data"]["RevisionMap"]["Branches"]:
                ref["CreatedAt"] = created
            hub = hubs.enter_context(MsHub(liar_hub.store.root))  # each date told by a hub of its own, in one play
            hub.faults.add(action="reply", status=200, body=json.dumps(answer).encode(), path=REVISIONS)
            tasks[f"c{index}"] = download(hub, tmp_path / f"c{index}")
        rows = run_table(tasks)
    for index, created in enumerate(dates):
        cache, result = tmp_path / f"c{index}", rows[f"c{index}"].result
        problems = audit_cache(cache, MODEL, *hub_versions(liar_hub, MODEL))
        ok = not result.get("failed") and not problems
        reliability.record("lying hub: CreatedAt not a date", outcome="completes with the published bytes", handled=int(ok), corrupt=len(problems))
        assert ok, (created, result.get("msg"), problems)


def _get(hub, path: str) -> bytes:
    from urllib.request import urlopen  # the test's own look at the real answer, before lying about it

    with urlopen(hub.url + path, timeout=10) as response:
        return response.read()


# -- silent connections -------------------------------------------------------------------------------


def test_connection_that_goes_silent_mid_body_is_resumed(liar, tmp_path):
    """The body stops after 1 MiB on an open connection: after the timeout the download resumes where it stopped."""
    hub, _seeded = liar
    cache = tmp_path / "cache"
    fault = hub.faults.add(action="stall", file="weights/model.bin", after_bytes=1 << 20, times=1)
    mark = len(hub.log)
    try:
        result = run_tasks([download(hub, cache, timeout=2)])[0]
    finally:
        hub.faults.clear()
    problems = audit_cache(cache, MODEL, *hub_versions(hub, MODEL))
    ranges = [r.range for r in hub.log.entries(mark) if r.file == "weights/model.bin" and r.download]
    # Resumed from what had reached the disk (bytes still in socket buffers when the client gave up are lost).
    resumed = [int(r[len("bytes="):-1]) for r in ranges if r]
    ok = not result.get("failed") and not problems and fault.hits == 1 and bool(resumed) and 0 < resumed[0] <= 1 << 20
    reliability.record("hub: connection silent mid-body (once)", outcome="completes with the published bytes", handled=int(ok), corrupt=len(problems))
    assert ok, (result.get("msg"), problems, ranges)


def test_connection_that_stays_silent_fails_in_bounded_time(liar, tmp_path):
    """Every answer stops after 1 MiB and the hub would hold each connection for minutes: the module gives up each
    attempt after its timeout (the hub logs that the client closed), and the run fails naming the file."""
    hub, _seeded = liar
    cache = tmp_path / "cache"
    hub.faults.add(action="stall", file="weights/model.bin", after_bytes=1 << 20)
    mark = len(hub.log)
    try:
        result = run_tasks([download(hub, cache, timeout=2, retries=1)])[0]
    finally:
        hub.faults.clear()

    def stalled_requests() -> list:
        return [r for r in hub.log.entries(mark) if r.file == "weights/model.bin" and r.download]

    wait_until(lambda: len(stalled_requests()) >= 2, timeout=10)  # each is logged once its handler notices the client left
    stalled = stalled_requests()
    problems = audit_cache(cache, MODEL, *hub_versions(hub, MODEL))
    msg = result.get("msg", "")
    ok = bool(result.get("failed")) and "weights/model.bin" in msg and MODEL in msg and not problems
    ok = ok and len(stalled) == 2 and all(r.given_up for r in stalled)
    reliability.record("hub: connection silent mid-body (persistent)", outcome="fails naming model and file; nothing unverified kept",
                       handled=int(ok), corrupt=len(problems))
    assert ok, (msg, problems, stalled)
