"""The cache audit of the hostile-world tests finds what it is there to find."""

from __future__ import annotations

import hashlib
import os

from ansible_collections.modelseed.fleet.plugins.module_utils import sdk_metadata
from ansible_collections.modelseed.fleet.plugins.module_utils.records import Record, state_path

from support.cache_audit import audit_cache

MODEL = "o/m"
REL = "models/o/m"
FILES = {"config.json": b"{}", "w/model.bin": b"weights" * 100}


def seed(cache):
    """A cache as a successful download leaves it: files, .msc, and a record of each file."""
    top = cache / REL
    record = Record(state_path(str(cache), "records", REL, ".json"))
    for rel, data in FILES.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(data)
        record.put(rel, len(data), hashlib.sha256(data).hexdigest(), "c1", os.lstat(top / rel))
    record.save(path=REL)
    (top / ".msc").write_bytes(sdk_metadata.msc_bytes([(rel, "c1") for rel in FILES]))
    return top


def test_a_clean_cache_passes_and_partial_downloads_are_ignored(tmp_path):
    seed(tmp_path)
    partial = tmp_path / ".modelseed/partial/x/w/model.bin"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")
    assert audit_cache(tmp_path, MODEL, FILES) == []


def test_a_flipped_byte_is_found_in_the_file_and_its_record(tmp_path):
    top = seed(tmp_path)
    (top / "w/model.bin").write_bytes(b"X" + FILES["w/model.bin"][1:])
    problems = audit_cache(tmp_path, MODEL, FILES)
    assert len(problems) == 3, problems  # the file, the .msc entry, the record entry
    assert any("not the published bytes of w/model.bin" in p for p in problems)


def test_a_stray_file_and_an_unverified_waiting_file_are_found(tmp_path):
    top = seed(tmp_path)
    (top / "stray.txt").write_bytes(b"?")
    waiting = tmp_path / ".modelseed/incoming/models%2Fo%2Fm/config.json"
    waiting.parent.mkdir(parents=True)
    waiting.write_bytes(b"{not it}")
    problems = audit_cache(tmp_path, MODEL, FILES)
    assert len(problems) == 2 and any("stray.txt" in p for p in problems) and any("incoming" in p for p in problems), problems


def test_msc_listing_a_missing_file_is_found(tmp_path):
    top = seed(tmp_path)
    (top / ".msc").write_bytes(sdk_metadata.msc_bytes([(rel, "c1") for rel in [*FILES, "gone.bin"]]))
    problems = audit_cache(tmp_path, MODEL, FILES, {"gone.bin": b"was here"})
    assert problems == [f"{top / '.msc'}: lists gone.bin, which is missing or not the published bytes"]
