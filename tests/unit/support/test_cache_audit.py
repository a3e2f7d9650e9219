"""The cache audit of the hostile-world tests passes correct caches of every SDK generation and fails each corrupt shape.

The caches are written here by hand, the way the SDK documents its layouts and metadata, not by the collection.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest

from support.cache_audit import Version, audit_cache

MODEL = "Org/Tiny-1.5B"
ESCAPED = "Tiny-1___5B"
V1 = Version({"config.json": b"{}", "w/model.bin": b"weights" * 100, "tok.json": b"tok", ".gitattributes": b"*.bin lfs\n"},
             {"config.json": "c1", "w/model.bin": "c1", "tok.json": "c1", ".gitattributes": "c1"}, "c1")
V2 = Version({**V1.files, "w/model.bin": b"better weights" * 90, "new.txt": b"added"},
             {**V1.revisions, "w/model.bin": "c2", "new.txt": "c2"}, "c2")
# Where each generation keeps the model, and the directory link it may carry.
TOPS = {
    "hub": "hub/Org/Tiny-1___5B",                        # 1.15 - 1.22
    "models": "models/Org/Tiny-1___5B",                  # 1.23 - 1.37
    "all": "models/Org/Tiny-1___5B",                     # both, hub/ linking to models/
    "snapshots": "models/Org--Tiny-1.5B/snapshots/master",  # 1.38 and later
}
LINKS = {
    "hub": ("hub/Org/Tiny-1.5B", ESCAPED),
    "models": ("models/Org/Tiny-1.5B", ESCAPED),
    "all": ("hub/Org/Tiny-1___5B", "../../models/Org/Tiny-1___5B"),
    "snapshots": ("models/Org--Tiny-1.5B/snapshots/v1.0", "master"),
}
GENERATIONS = list(TOPS)
WITH_METADATA = ["hub", "models", "all"]


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def msc(entries: dict[str, str]) -> bytes:
    return pickle.dumps([{"Path": p, "Revision": r} for p, r in entries.items()], protocol=4)


def seed(cache: Path, generation: str, version: Version = V1) -> Path:
    """A correct cache of one generation: files, SDK metadata up to 1.37, the generation's directory link."""
    top = cache / TOPS[generation]
    for rel, data in version.files.items():
        write(top / rel, data)
    if generation != "snapshots":
        write(top / ".msc", msc(dict(version.revisions)))
        write(top / ".mdl", pickle.dumps({"id": f"Org/{ESCAPED}"}, protocol=4))
        write(top / ".mv", b"Revision:master,CreatedAt:1700000000")
    link, target = LINKS[generation]
    (cache / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, cache / link)
    return top


def audit(cache: Path) -> list[str]:
    return audit_cache(cache, MODEL, V1, V2)


# -- correct caches pass ------------------------------------------------------------------------


@pytest.mark.parametrize("generation", GENERATIONS)
def test_a_complete_cache_passes(tmp_path, generation):
    seed(tmp_path, generation)
    assert audit(tmp_path) == []


@pytest.mark.parametrize("generation", GENERATIONS)
def test_the_newer_version_passes_too(tmp_path, generation):
    seed(tmp_path, generation, V2)
    assert audit(tmp_path) == []


def test_an_absent_model_and_scratch_pass(tmp_path):
    for scratch in (".modelseed/partial/models%2FOrg%2FTiny-1___5B/w/model.bin", "._____temp/Org/Tiny-1.5B/w/model.bin",
                    "models/._____temp/Org/Tiny-1.5B/x", ".lock/Org___Tiny-1.5B", "ast_indexer"):
        write(tmp_path / scratch, b"half")
    (tmp_path / "models/Org/Tiny-1___5B").mkdir(parents=True)  # empty: every SDK reads it as absent
    assert audit(tmp_path) == []


def test_old_sdks_may_leave_out_gitattributes(tmp_path):
    top = seed(tmp_path, "models")
    (top / ".gitattributes").unlink()
    write(top / ".msc", msc({p: r for p, r in V1.revisions.items() if p != ".gitattributes"}))
    assert audit(tmp_path) == []


def test_an_absolute_link_inside_the_cache_passes(tmp_path):
    """SDKs 1.20 - 1.37 link the dotted name to the escaped directory with an absolute link."""
    seed(tmp_path, "models")
    link = tmp_path / "models/Org/Tiny-1.5B"
    link.unlink()
    os.symlink(tmp_path / "models/Org/Tiny-1___5B", link)
    assert audit(tmp_path) == []


# -- each corrupt shape is found ----------------------------------------------------------------


@pytest.mark.parametrize("generation", GENERATIONS)
def test_missing_files(tmp_path, generation):
    (seed(tmp_path, generation) / "w/model.bin").unlink()
    problems = audit(tmp_path)
    assert f"{TOPS[generation]}/w/model.bin: missing" in problems, problems


@pytest.mark.parametrize("generation", GENERATIONS)
def test_files_mixed_from_two_commits(tmp_path, generation):
    top = seed(tmp_path, generation, V2)
    write(top / "w/model.bin", V1.files["w/model.bin"])  # every file published, but not all by one commit
    problems = audit(tmp_path)
    assert f"{TOPS[generation]}: not complete for any one published version of {MODEL}" in problems, problems
    assert any("files mixed from two commits" in p for p in problems), problems


@pytest.mark.parametrize("generation", WITH_METADATA)
def test_no_msc(tmp_path, generation):
    (seed(tmp_path, generation) / ".msc").unlink()
    assert audit(tmp_path) == [f"{TOPS[generation]}: no .msc, so SDKs up to 1.37 download every file again"]


@pytest.mark.parametrize("generation", WITH_METADATA)
@pytest.mark.parametrize("content", [b"not a pickle", pickle.dumps({"Path": "config.json"}), pickle.dumps([("config.json", "c1")]),
                                     b"cos\nsystem\n(S'true'\ntR."], ids=["garbage", "dict", "tuples", "code"])
def test_an_unreadable_msc(tmp_path, generation, content):
    write(seed(tmp_path, generation) / ".msc", content)
    problems = audit(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(f"{TOPS[generation]}/.msc: unreadable"), problems


@pytest.mark.parametrize("generation", WITH_METADATA)
def test_an_msc_with_wrong_revisions(tmp_path, generation):
    write(seed(tmp_path, generation) / ".msc", msc({**V1.revisions, "w/model.bin": "c2"}))
    assert audit(tmp_path) == [f"{TOPS[generation]}/.msc: w/model.bin at revision 'c2', the hub lists 'c1'"]


def test_an_msc_that_lists_too_little_or_too_much(tmp_path):
    top = seed(tmp_path, "models")
    write(top / ".msc", msc({**{p: r for p, r in V1.revisions.items() if p != "tok.json"}, "new.txt": "c2"}))
    assert sorted(audit(tmp_path)) == [f"{TOPS['models']}/.msc: does not list tok.json",
                                       f"{TOPS['models']}/.msc: lists new.txt, which is not a file of this version in the directory"]


def test_an_empty_revision_is_wrong_even_when_revisions_are_unknown(tmp_path):
    write(seed(tmp_path, "models") / ".msc", msc({**V1.revisions, "tok.json": ""}))
    assert audit_cache(tmp_path, MODEL, V1.files) == [f"{TOPS['models']}/.msc: tok.json with an empty revision, which matches any commit"]


@pytest.mark.parametrize("generation", WITH_METADATA)
@pytest.mark.parametrize("name, content", [
    (".mv", b"garbage"), (".mv", b"Revision:master"), (".mdl", b"junk"), (".mdl", pickle.dumps({"id": "Other/model"})),
], ids=["mv-text", "mv-no-date", "mdl-junk", "mdl-other-model"])
def test_junk_mv_or_mdl(tmp_path, generation, name, content):
    write(seed(tmp_path, generation) / name, content)
    problems = audit(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(f"{TOPS[generation]}/{name}: "), problems


@pytest.mark.parametrize("generation", GENERATIONS)
def test_a_final_file_name_linking_out_of_the_cache(tmp_path, generation):
    cache = tmp_path / "cache"
    top = seed(cache, generation)
    outside = tmp_path / "elsewhere/model.bin"
    write(outside, V1.files["w/model.bin"])  # the right bytes, in a place the cache does not own
    (top / "w/model.bin").unlink()
    os.symlink(outside, top / "w/model.bin")
    problems = audit(cache)
    assert f"{TOPS[generation]}/w/model.bin: a link out of the cache (-> {outside})" in problems, problems


@pytest.mark.parametrize("generation", GENERATIONS)
def test_a_dangling_directory_link(tmp_path, generation):
    seed(tmp_path, generation)
    link, _target = LINKS[generation]
    (tmp_path / link).unlink()
    os.symlink("gone", tmp_path / link)
    assert audit(tmp_path) == [f"{link}: a dangling link (-> gone)"]


def test_a_directory_link_to_something_else(tmp_path):
    seed(tmp_path, "models")
    (tmp_path / "models/Org/Tiny-1.5B").unlink()
    (tmp_path / ".modelseed/partial/x").mkdir(parents=True)
    os.symlink("../../.modelseed/partial/x", tmp_path / "models/Org/Tiny-1.5B")
    problems = audit(tmp_path)
    assert problems == [f"models/Org/Tiny-1.5B: links to ../../.modelseed/partial/x, which is not a model directory of {MODEL}"]


# -- records and files waiting to move in -------------------------------------------------------


def record(cache: Path, rel: str, files: dict[str, bytes]) -> None:
    entries = {p: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest(), "revision": "c1"} for p, d in files.items()}
    write(cache / ".modelseed/records" / (rel.replace("/", "%2F") + ".json"), json.dumps({"format": 1, "path": rel, "files": entries}).encode())


def test_a_flipped_byte_is_found_in_the_file_and_its_record(tmp_path):
    top = seed(tmp_path, "models")
    record(tmp_path, TOPS["models"], dict(V1.files))
    write(top / "w/model.bin", b"X" + V1.files["w/model.bin"][1:])
    problems = audit(tmp_path)
    assert f"{TOPS['models']}/w/model.bin: not the published bytes of w/model.bin" in problems, problems
    assert any("records w/model.bin as verified" in p for p in problems), problems


def test_a_stray_file_and_an_unverified_waiting_file_are_found(tmp_path):
    top = seed(tmp_path, "models")
    write(top / "stray.txt", b"?")
    write(tmp_path / ".modelseed/incoming/models%2FOrg%2FTiny-1___5B/config.json", b"{not it}")
    write(tmp_path / "Org/stray.bin", b"?")
    problems = audit(tmp_path)
    assert f"{TOPS['models']}/stray.txt: not a file of {MODEL}" in problems, problems
    assert ".modelseed/incoming/models%2FOrg%2FTiny-1___5B/config.json: not the published bytes of config.json" in problems, problems
    assert f"Org/stray.bin: not a file of {MODEL}" in problems, problems


def test_a_record_of_part_of_a_version_or_of_nothing_is_found(tmp_path):
    seed(tmp_path, "models")
    record(tmp_path, TOPS["models"], {p: d for p, d in V1.files.items() if p != "tok.json"})
    record(tmp_path, "hub/Org/Tiny-1___5B", dict(V1.files))
    problems = audit(tmp_path)
    assert sorted(problems) == ["hub%2FOrg%2FTiny-1___5B.json: records hub/Org/Tiny-1___5B, which is not there",
                                f"models%2FOrg%2FTiny-1___5B.json: does not record one whole published version of {MODEL}"], problems


def test_a_record_of_a_whole_version_passes(tmp_path):
    seed(tmp_path, "models", V2)
    record(tmp_path, TOPS["models"], dict(V2.files))
    assert audit(tmp_path) == []
