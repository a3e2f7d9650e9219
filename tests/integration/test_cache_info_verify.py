"""cache_info verify: full through ansible-playbook, on copies of a real cache each damaged in one way.

The caches are made by modelscope_model from a hub of this test's own with two commits; every corrupt shape
the hostile-world audit looks for must come back as a defect, a correct copy as ok, a copy without a record as
unverifiable, and the same copy checked against the bundle's manifest as ok again.
"""

from __future__ import annotations

import os
import pickle
import shutil

import pytest

from support.cache_audit import audit_cache, hub_versions
from support.module_process import run_modules
from support.mshub import MsHub, make_repo, push_commit
from support.playbook import run_tasks

MODEL = "Verify/Tiny-0.5B"
TOP = "models/Verify/Tiny-0___5B"
HUB_LINK = "hub/Verify/Tiny-0___5B"
OLD = {"config.json": b'{"v": 1}', "tokenizer.json": b"t" * 4000, "weights/model.bin": b"w1" * 50_000}
CHANGED = {"weights/model.bin": b"w2" * 50_000, "added.txt": b"new in the second commit"}


def info(cache, **options) -> dict:
    return {"modelseed.fleet.cache_info": {"cache_dir": str(cache), "verify": "full", **options}}


def damage(base, work, name, change) -> str:
    """A copy of ``base`` with one thing broken by ``change(model directory, cache root)``."""
    cache = work / name
    shutil.copytree(base, cache, symlinks=True)
    change(cache / TOP, cache)
    return str(cache)


def relink(path, target) -> None:
    os.unlink(path)
    os.symlink(target, path)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """(old cache, new cache, bundle of the new one, work dir), downloaded and bundled by module processes."""
    work, args = tmp_path_factory.mktemp("verify"), tmp_path_factory.mktemp("verify-args")
    make_repo(work / "hub", MODEL, OLD, versioned=True)
    with MsHub(work / "hub") as hub:
        old = {"modelseed.fleet.modelscope_model": {"name": MODEL, "cache_dir": str(work / "old"), "endpoint": hub.url, "layout": "all"}}
        assert not run_modules([old], args)[0].get("failed")
        push_commit(hub.store.root, MODEL, CHANGED)
        new = {"modelseed.fleet.modelscope_model": {"name": MODEL, "cache_dir": str(work / "new"), "endpoint": hub.url, "layout": "all"}}
        bundle = {"modelseed.fleet.cache_bundle": {"cache_dir": str(work / "new"), "dest": str(work / "bundle"), "models": [{"name": MODEL}]}}
        results = run_modules([new, bundle], args)
    assert not any(r.get("failed") for r in results), [r.get("msg") for r in results]
    return work / "old", work / "new", work / "bundle", work


def test_every_corrupt_shape_is_reported(caches):
    old, new, bundle, work = caches
    outside = work / "outside.bin"
    outside.write_bytes((new / TOP / "tokenizer.json").read_bytes())
    shapes = {
        "missing": lambda top, root: (top / "added.txt").unlink(),
        "mixed": lambda top, root: shutil.copy2(old / TOP / "weights/model.bin", top / "weights/model.bin"),
        "no-msc": lambda top, root: (top / ".msc").unlink(),
        "unreadable-msc": lambda top, root: (top / ".msc").write_bytes(b"cos\nsystem\n(S'true'\ntR."),
        "old-msc": lambda top, root: shutil.copy2(old / TOP / ".msc", top / ".msc"),
        "junk-mv-mdl": lambda top, root: ((top / ".mv").write_bytes(b"junk"), (top / ".mdl").write_bytes(pickle.dumps({"id": "Other/x"}))),
        "link-out": lambda top, root: relink(top / "tokenizer.json", outside),
        "dangling-dir-link": lambda top, root: relink(root / HUB_LINK, "../../models/Verify/gone"),
    }
    clean = damage(new, work, "clean", lambda top, root: None)
    unrecorded = damage(new, work, "unrecorded", lambda top, root: shutil.rmtree(root / ".modelseed"))
    damaged = {name: damage(new, work, name, change) for name, change in shapes.items()}
    runs = run_tasks([info(clean), info(unrecorded), info(unrecorded, bundle=str(bundle)),
                      *(info(cache) for cache in damaged.values())]).results
    assert not any(r.get("failed") for r in runs), [r.get("msg") for r in runs]
    ok, unverifiable, by_manifest, *broken = runs
    report = dict(zip(damaged, broken, strict=True))

    (model,) = ok["models"]
    assert (model["verification"], model["verified_against"], ok["problems"], ok["bad_links"]) == ("ok", "record", [], [])
    (model,) = unverifiable["models"]
    assert model["verification"] == "unverifiable" and unverifiable["unverifiable"] == [f"{MODEL} (all, {model['path']})"]
    (model,) = by_manifest["models"]
    assert (model["verification"], model["verified_against"], by_manifest["problems"]) == ("ok", "manifest", [])

    def defects(name):
        (found,) = report[name]["models"]
        return found["defects"]

    assert defects("missing") == ["missing: added.txt", ".msc lists added.txt, which is not a file of the model here"]
    assert defects("mixed") == ["corrupt (sha256 differs): weights/model.bin"]
    assert defects("no-msc") == ["no .msc: SDKs up to 1.37 download every file again"]
    assert len(defects("unreadable-msc")) == 1 and defects("unreadable-msc")[0].startswith("unreadable .msc: UnpicklingError")
    assert defects("old-msc") and all(d.startswith(".msc ") for d in defects("old-msc")) and any("at revision" in d for d in defects("old-msc"))
    assert defects("junk-mv-mdl") == [f".mdl does not name {MODEL}", ".mv is not Revision:<revision>,CreatedAt:<unix time>"]
    assert defects("link-out") == [f"link out of the cache: {TOP}/tokenizer.json -> {outside}"]
    dangling = report["dangling-dir-link"]
    # The dotted-name alias beside it leads through it, so it dangles too.
    assert dangling["bad_links"] == ["dangling link: hub/Verify/Tiny-0.5B -> Tiny-0___5B", f"dangling link: {HUB_LINK} -> ../../models/Verify/gone"]
    assert dangling["problems"] == dangling["bad_links"]
    for name, result in report.items():
        (found,) = result["models"]
        if name != "dangling-dir-link":
            assert found["verification"] == "failed" and not found["complete"] and result["problems"], (name, result)

    # The hostile-world audit, judging by the hub's commits instead of the record, agrees on every copy.
    published = hub_versions(work / "hub", MODEL)
    assert audit_cache(clean, MODEL, *published) == [] and audit_cache(unrecorded, MODEL, *published) == []
    assert all(audit_cache(cache, MODEL, *published) for cache in damaged.values()), {n: audit_cache(c, MODEL, *published) for n, c in damaged.items()}
