"""cache_bundle through ansible-playbook, on caches seeded by modelscope_model from the loopback hub."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata
from support.mshub import MsHub, make_repo, push_commit
from support.playbook import run_tasks
from support.sample_models import MODEL, model_files

MODEL_DIR = "models/Qwen/Qwen2___5-0___5B-Test"
TAR = "Qwen--Qwen2.5-0.5B-Test--master.tar"


def download(hub, cache, name=MODEL, **options):
    args = {"name": name, "cache_dir": str(cache), "endpoint": hub.url, "layout": "all", "retries": 2, **options}
    return {"modelseed.fleet.modelscope_model": args}


def bundle(cache, dest, models=None, **options):
    args = {"cache_dir": str(cache), "dest": str(dest), **options}
    if models is not None:
        args["models"] = models
    return {"modelseed.fleet.cache_bundle": args}


def set_mode(path: Path, mode: str) -> dict:
    return {"ansible.builtin.file": {"path": str(path), "mode": mode}}


def write(dest: Path, content: str) -> dict:
    return {"ansible.builtin.copy": {"dest": str(dest), "content": content}}


def listing(directory: Path) -> dict:
    """A task whose stdout lists ``directory``, hidden files too (and which fails when it is not there)."""
    return {"ansible.builtin.command": {"argv": ["ls", "-A", str(directory)]}}


def identity(*paths: Path) -> dict:
    """A task whose stdout has a line ``inode seconds.nanoseconds`` (the mtime) for each of ``paths``."""
    return {"ansible.builtin.command": {"argv": ["stat", "-c", "%i %.9Y", *map(str, paths)]}}


def identity_line(st: os.stat_result) -> str:
    """The line of ``identity`` for a file of that ``os.stat`` result."""
    return f"{st.st_ino} {st.st_mtime_ns // 10**9}.{st.st_mtime_ns % 10**9:09d}"


def manifest_of(slurped: dict) -> dict:
    """The manifest an ``ansible.builtin.slurp`` task read."""
    return bundle_format.parse_manifest(base64.b64decode(slurped["content"]))


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def read_manifest(dest: Path) -> dict:
    return bundle_format.parse_manifest((dest / "manifest.json").read_bytes())


@pytest.fixture(scope="module")
def seeds(hub, tmp_path_factory) -> dict[str, Path]:
    """Caches seeded in one play and shared by this module's tests: one per layout, and `both` in the models and the
    snapshots layouts. A test that changes one for good works on a copy of its own (copytree keeps the mtimes its
    records hold)."""
    root = tmp_path_factory.mktemp("seeds")
    caches = {name: root / name for name in ("all", "snapshots", "hub", "both")}
    run = run_tasks([download(hub, caches["all"]), download(hub, caches["snapshots"], layout="snapshots"),
                     download(hub, caches["hub"], layout="hub"),
                     download(hub, caches["both"], layout="models"), download(hub, caches["both"], layout="snapshots")])
    assert not any(r.get("failed") for r in run.results), [r.get("msg") for r in run.results]
    return caches


@pytest.fixture()
def cache(seeds):
    """The cache in the `all` layout, shared by the tests that only read it (or put back what they change)."""
    return seeds["all"]


def test_check_real_check_real(cache, tmp_path):
    dest = tmp_path / "bundle"
    task = bundle(cache, dest, [{"name": MODEL}])
    run = run_tasks([{**task, "check_mode": True}, task, {**task, "check_mode": True}, task])
    assert [r["changed"] for r in run.results] == [True, True, False, False], [r.get("msg") for r in run.results]
    assert not any(r.get("failed") for r in run.results)
    check, real, again = run.results[0], run.results[1], run.results[3]
    assert "1 model(s) new" in check["msg"] and "would write 1 tar(s)" in check["msg"]
    assert "1 model(s) new" in real["msg"] and "wrote 1 tar(s)" in real["msg"]
    assert "up to date" in again["msg"]
    # Check mode knew the exact size of the tar it did not write.
    assert check["models"][0]["tar_size"] == real["models"][0]["tar_size"] == (dest / TAR).stat().st_size
    assert check["models"][0]["tar_sha256"] is None and check["models"][0]["changed"]
    assert not again["models"][0]["changed"] and again["models"][0]["tar_sha256"] == real["models"][0]["tar_sha256"]
    total = sum(len(v) for v in model_files().values())
    model = real["models"][0]
    assert model["id"] == MODEL and model["revision"] == "master" and model["bytes"] == total == real["bytes"]
    assert model["source_layout"] == "all" and model["source"] == str(cache / MODEL_DIR)
    assert real["dest"] == str(dest) and real["manifest"] == str(dest / "manifest.json")

    manifest = read_manifest(dest)
    entry = manifest["models"][0]
    assert entry["tar"] == TAR and entry["tar_size"] == model["tar_size"] and entry["commit"] == model["commit"]
    assert entry["source_layout"] == "all" and manifest["total_bytes"] == total
    files = model_files()
    assert [f["path"] for f in entry["files"]] == sorted(files)
    for f in entry["files"]:
        assert f["size"] == len(files[f["path"]]) and f["sha256"] == hashlib.sha256(files[f["path"]]).hexdigest()
        assert re.match(r"^[0-9a-f]{40}$", f["revision"])
    assert [m["path"] for m in entry["metadata"]] == [".mdl", ".msc", ".mv"]
    # The bundle directory holds the bundle only: the runs' lock is beside it, never served with it.
    assert sorted(p.name for p in dest.iterdir()) == sorted(["SHA256SUMS", TAR, "manifest.json"])
    assert (dest.parent / f".{dest.name}.lock").is_file()
    for p in (dest / TAR, dest / "manifest.json", dest / "SHA256SUMS"):
        assert p.stat().st_mode & 0o777 == 0o644
    # Anyone can check the bundle with coreutils, offline.
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dest, capture_output=True, text=True, check=False)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert sorted(sums.stdout.splitlines()) == [f"{TAR}: OK", "manifest.json: OK"]
    assert hashlib.sha256((dest / TAR).read_bytes()).hexdigest() == entry["tar_sha256"]


def test_rerun_reads_no_tar_and_no_weights(cache, tmp_path):
    dest = tmp_path / "bundle"
    tar, weights = dest / TAR, cache / MODEL_DIR / "weights/model-00001.bin"
    # Unreadable files prove the re-run decides from the manifest, sizes and the record alone.
    try:
        run = run_tasks([bundle(cache, dest, [{"name": MODEL}]), set_mode(tar, "0000"), set_mode(weights, "0000"),
                         bundle(cache, dest, [{"name": MODEL}])])
    finally:
        os.chmod(tar, 0o644)
        os.chmod(weights, 0o644)
    assert run[0]["changed"], run[0]["msg"]
    assert not run[1].get("failed") and not run[2].get("failed"), [run[1].get("msg"), run[2].get("msg")]
    result = run[3]
    assert result["changed"] is False and not result.get("failed"), result["msg"]


def test_tar_lists_sorted_entries_owned_by_root(cache, tmp_path):
    model = cache / MODEL_DIR
    # Neither links nor files the record does not list get into the tar.
    (model / "stray.txt").write_bytes(b"not from the hub")
    os.symlink("config.json", model / "link.json")
    os.symlink("/etc", model / "weights/escape")
    try:
        result = run_tasks([bundle(cache, tmp_path / "b", [{"name": MODEL}])])[0]
    finally:
        for extra in ("stray.txt", "link.json", "weights/escape"):
            os.unlink(model / extra)
    assert result["changed"], result["msg"]
    tar = tmp_path / "b" / TAR
    listing = subprocess.run(["tar", "--numeric-owner", "--full-time", "-tvf", str(tar)], capture_output=True, text=True, check=True)
    lines = listing.stdout.splitlines()
    names = [line.split(None, 5)[5] for line in lines]
    expected = sorted(set(model_files()) | {".msc", ".mdl", ".mv", ".hidden", "weights"})
    assert [n.rstrip("/") for n in names] == expected
    manifest = read_manifest(tmp_path / "b")["models"][0]
    stamp = manifest["created_at"]
    for line, name in zip(lines, names, strict=True):
        mode, owner = line.split()[:2]
        assert owner == "0/0", line
        assert mode == ("drwxr-xr-x" if name.endswith("/") else "-rw-r--r--"), line
    with tarfile.open(tar) as archive:
        members = archive.getmembers()
        assert [(m.name, "dir" if m.isdir() else "file", m.size) for m in members] == [
            (name, "dir" if kind == "dir" else "file", size) for name, kind, size in bundle_format.tar_members(manifest)]
        assert {m.mtime for m in members} == {stamp} and {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
        # Python's tarfile extracts exactly the downloaded files and the generated metadata.
        out = tmp_path / "x"
        archive.extractall(out, filter="data") if hasattr(tarfile, "data_filter") else archive.extractall(out)
    for rel, data in model_files().items():
        assert (out / rel).read_bytes() == data, rel
    for name, data in bundle_format.metadata_entries(manifest):
        assert (out / name).read_bytes() == data
    assert sdk_metadata.read_msc((out / ".msc").read_bytes()) == {f["path"]: f["revision"] for f in manifest["files"]}
    # GNU tar agrees on every byte.
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    subprocess.run(["tar", "-xf", str(tar), "-C", str(gnu)], check=True)
    assert digests_tree(gnu) == digests_tree(out)


def digests_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_independent_of_layout(seeds, tmp_path):
    cache, first, second = seeds["all"], tmp_path / "one", tmp_path / "two"
    # The same files at the same commit, read from a cache in another layout: the same tar.
    run = run_tasks([bundle(cache, first, [{"name": MODEL}]), bundle(cache, second, [{"name": MODEL}]),
                     bundle(seeds["snapshots"], tmp_path / "three", [{"name": MODEL}]),
                     bundle(seeds["hub"], tmp_path / "four", [{"name": MODEL}], layout="hub")])
    assert all(r["changed"] for r in run.results[:2]), [r.get("msg") for r in run.results]
    assert digests(first) == digests(second) and TAR in digests(first)
    assert [r["models"][0]["source_layout"] for r in run.results[2:]] == ["snapshots", "hub"]
    for dest in ("three", "four"):
        assert (tmp_path / dest / TAR).read_bytes() == (first / TAR).read_bytes()
        manifest = read_manifest(tmp_path / dest)["models"][0]
        assert {k: v for k, v in manifest.items() if k != "source_layout"} == {
            k: v for k, v in read_manifest(first)["models"][0].items() if k != "source_layout"}


def test_layout_auto_prefers_models_and_explicit_layouts(seeds, tmp_path):
    both = seeds["both"]
    run = run_tasks([bundle(both, tmp_path / "a", [{"name": MODEL}]),
                     bundle(both, tmp_path / "s", [{"name": MODEL}], layout="snapshots"),
                     bundle(both, tmp_path / "h", [{"name": MODEL}], layout="hub")])
    assert run[0]["models"][0]["source_layout"] == "models"
    assert run[1]["models"][0]["source"] == str(both / "models/Qwen--Qwen2.5-0.5B-Test/snapshots/master")
    assert run[2]["failed"] and "not found" in run[2]["msg"] and "hub/Qwen/Qwen2___5-0___5B-Test" in run[2]["msg"]


def test_file_modified_after_download_fails_clearly(hub, seeds, tmp_path):
    cache = Path(shutil.copytree(seeds["all"], tmp_path / "c", symlinks=True))
    victim = cache / MODEL_DIR / "weights/model-00002.bin"
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))
    published = tmp_path / "model-00002.bin"
    published.write_bytes(model_files()["weights/model-00002.bin"])
    dest = tmp_path / "b"
    run = run_tasks([bundle(cache, dest, [{"name": MODEL}]), bundle(cache, dest, [{"name": MODEL}], verify="full"), listing(dest),
                     # Restored content with a new mtime: verify=full accepts it, verify=none still refuses.
                     {"ansible.builtin.copy": {"src": str(published), "dest": str(victim)}},
                     bundle(cache, dest, [{"name": MODEL}], verify="full"), bundle(cache, dest, [{"name": MODEL}]),
                     # modelscope_model re-verifies (and re-records) the file; then the default works and reuses the tar.
                     download(hub, cache), bundle(cache, dest, [{"name": MODEL}])])
    stale, full, left, restore = run.results[:4]
    assert stale["failed"] and "changed since they were verified" in stale["msg"], stale["msg"]
    assert "weights/model-00002.bin: modified" in stale["msg"] and "verify=full" in stale["msg"]
    assert full["failed"] and "differ from the sha256 recorded" in full["msg"] and "weights/model-00002.bin" in full["msg"]
    # Nothing of a bundle is left behind, not even a temp file.
    assert left["rc"] == 0 and left["stdout_lines"] == [], left
    assert restore["changed"] and not restore.get("failed"), restore.get("msg")
    assert run[4]["changed"] and not run[4].get("failed"), run[4]["msg"]
    assert run[5]["failed"] and "changed since" in run[5]["msg"]
    assert not run[6].get("failed"), run[6]["msg"]
    again = run[7]
    assert not again.get("failed") and again["changed"] is False, again["msg"]


def test_model_without_record_is_refused(seeds, tmp_path):
    cache = Path(shutil.copytree(seeds["snapshots"], tmp_path / "c", symlinks=True))
    records = list((cache / ".modelseed/records").iterdir())
    assert records
    for record in records:
        record.unlink()
    result, missing, wrong_revision, empty = run_tasks([
        bundle(cache, tmp_path / "b", [{"name": MODEL}]), bundle(cache, tmp_path / "b", [{"name": "o/none"}]),
        bundle(cache, tmp_path / "b", [{"name": MODEL, "revision": "v1.0"}], layout="all"), bundle(cache, tmp_path / "b")]).results
    assert result["failed"] and "no verification record" in result["msg"] and "modelscope_model" in result["msg"]
    assert missing["failed"] and "not found" in missing["msg"]
    assert wrong_revision["failed"] and "not found" in wrong_revision["msg"]
    assert empty["failed"] and "no complete model with a verification record" in empty["msg"]


@pytest.fixture()
def two_models(tmp_path):
    root = tmp_path / "hubroot"
    make_repo(root, "o/alpha", {"a.bin": os.urandom(1 << 20), "cfg.json": b"{}"}, versioned=True)
    make_repo(root, "o/beta", {"b.bin": os.urandom(1 << 19), "sub/x.txt": b"x"}, versioned=True)
    with MsHub(root) as server:
        yield server, root


def test_only_the_changed_model_is_rewritten(two_models, tmp_path):
    hub, root = two_models
    cache, dest = tmp_path / "c", tmp_path / "b"
    run = run_tasks([download(hub, cache, "o/alpha"), download(hub, cache, "o/beta", layout="snapshots"),
                     bundle(cache, dest)])  # every recorded model of the cache
    assert not any(r.get("failed") for r in run.results), [r.get("msg") for r in run.results]
    assert [m["tar"] for m in run[2]["models"]] == ["o--alpha--master.tar", "o--beta--master.tar"]
    assert "2 model(s) new" in run[2]["msg"]
    alpha, beta = dest / "o--alpha--master.tar", dest / "o--beta--master.tar"
    alpha_before, beta_before = alpha.stat(), beta.stat()
    old_manifest = read_manifest(dest)

    push_commit(root, "o/beta", {"sub/x.txt": b"y" * 10})
    slurp = {"ansible.builtin.slurp": {"src": str(dest / "manifest.json")}}
    run = run_tasks([
        download(hub, cache, "o/beta", layout="snapshots"), bundle(cache, dest), identity(alpha, beta), slurp,
        {"ansible.builtin.command": {"argv": ["sha256sum", "--quiet", "-c", "SHA256SUMS"], "chdir": str(dest)}},
        # A tar deleted by hand is noticed from its absence alone, and only it is written again.
        {"ansible.builtin.file": {"path": str(alpha), "state": "absent"}}, bundle(cache, dest), slurp,
        # Dropping a model from the list removes its tar; prune=false keeps it (outside the manifest).
        bundle(cache, dest, [{"name": "o/alpha"}], prune=False), {**bundle(cache, dest, [{"name": "o/alpha"}]), "check_mode": True},
        {"ansible.builtin.stat": {"path": str(beta)}}, bundle(cache, dest, [{"name": "o/alpha"}])])
    download_beta, update, identities, updated_manifest, sums, removal, again, again_manifest = run.results[:8]
    kept, beta_kept, pruned = run.results[8:10], run[10], run[11]
    assert not download_beta.get("failed"), download_beta["msg"]
    assert update["changed"] and "1 model(s) changed commit" in update["msg"] and "reused 1" in update["msg"], update["msg"]
    assert [m["changed"] for m in update["models"]] == [False, True]
    alpha_line, beta_line = identities["stdout_lines"]
    assert alpha_line == identity_line(alpha_before)
    assert int(beta_line.split()[0]) != beta_before.st_ino
    new_manifest = manifest_of(updated_manifest)
    assert new_manifest["models"][0] == old_manifest["models"][0]
    assert new_manifest["models"][1]["commit"] != old_manifest["models"][1]["commit"]
    assert sums["rc"] == 0, sums
    assert removal["changed"], removal
    assert again["changed"] and "1 model(s) tar missing or of another size" in again["msg"], again["msg"]
    assert [m["changed"] for m in again["models"]] == [True, False]
    assert manifest_of(again_manifest) == new_manifest

    assert kept[0]["changed"] and "1 model(s) removed" in kept[0]["msg"] and kept[0]["removed"] == []
    assert kept[1]["changed"] and kept[1]["removed"] == ["o--beta--master.tar"] and "1 stale tar(s)" in kept[1]["msg"]
    assert beta_kept["stat"]["exists"]
    assert pruned["changed"] and pruned["removed"] == ["o--beta--master.tar"] and not beta.exists()
    assert [m["id"] for m in read_manifest(dest)["models"]] == ["o/alpha"]
    assert sorted(p.name for p in dest.iterdir()) == ["SHA256SUMS", "manifest.json", "o--alpha--master.tar"]


def test_a_run_waits_for_the_lock_beside_dest(cache, tmp_path):
    """Runs writing one dest are serialized by the lock beside it: while another holds it, a run gives up after
    lock_timeout naming it, and leaves the bundle as it was."""
    dest = tmp_path / "b"
    assert run_tasks([bundle(cache, dest, [{"name": MODEL}])])[0]["changed"]
    before = digests(dest)
    lock = tmp_path / ".b.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another writer, as far as the module can tell
        waiter = run_tasks([bundle(cache, dest, [{"name": MODEL}], prune=False, lock_timeout=1)])[0]
    assert waiter["failed"] and f"{lock} is locked by another run" in waiter["msg"], waiter["msg"]
    assert digests(dest) == before


def test_interrupted_leftovers_and_hand_edits_are_repaired(cache, tmp_path):
    dest, saved = tmp_path / "b", tmp_path / "SHA256SUMS.first"
    leftover = dest / f".{TAR}.abc123.tmp"
    run = run_tasks([bundle(cache, dest, [{"name": MODEL}]), write(leftover, "half a tar"), bundle(cache, dest, [{"name": MODEL}]),
                     {"ansible.builtin.stat": {"path": str(leftover)}},
                     {"ansible.builtin.copy": {"src": str(dest / "SHA256SUMS"), "dest": str(saved), "remote_src": True}},
                     write(dest / "SHA256SUMS", "garbage\n"), bundle(cache, dest, [{"name": MODEL}])])
    assert run[0]["changed"] and not any(r.get("failed") for r in run.results), [r.get("msg") for r in run.results]
    assert run[2]["changed"] is False
    assert not run[3]["stat"]["exists"]
    result = run[6]
    assert result["changed"] and "out of date" in result["msg"] and "wrote 0 tar(s)" in result["msg"]
    assert (dest / "SHA256SUMS").read_bytes() == saved.read_bytes()


def test_diff_and_bad_options(cache, tmp_path):
    result, *run = run_tasks([{**bundle(cache, tmp_path / "b", [{"name": MODEL}]), "diff": True},
                              bundle(cache, tmp_path / "b", [{"name": "../x"}]),
                              bundle(cache, tmp_path / "b", [{"name": MODEL}, {"name": MODEL}]),
                              bundle(cache, cache, [{"name": MODEL}])]).results
    assert result["diff"]["before"] == {} and list(result["diff"]["after"]) == [f"{MODEL}@master"]
    assert run[0]["failed"] and "invalid model id" in run[0]["msg"]
    assert run[1]["failed"] and "listed twice" in run[1]["msg"]
    assert run[2]["failed"] and "directory of its own" in run[2]["msg"]


def test_tar_reads_back_in_python_streaming_mode(cache, tmp_path):
    """The installer may read the tar as a stream (r|): every member's data is where its header says."""
    result = run_tasks([bundle(cache, tmp_path / "b", [{"name": MODEL}])])[0]
    seen = {}
    with tarfile.open(tmp_path / "b" / TAR, mode="r|") as archive:
        for member in archive:
            if member.isfile():
                seen[member.name] = hashlib.sha256(archive.extractfile(member).read()).hexdigest()
    manifest = read_manifest(tmp_path / "b")["models"][0]
    expected = {f["path"]: f["sha256"] for f in manifest["files"]}
    expected.update({m["path"]: m["sha256"] for m in manifest["metadata"]})
    assert seen == expected
    assert result["models"][0]["tar_size"] % 10240 == 0
    assert io.BytesIO((tmp_path / "b" / TAR).read_bytes()[-1024:]).read() == b"\0" * 1024


def test_update_swaps_the_whole_directory(two_models, tmp_path):
    """An update is written beside dest and swapped in whole: dest is another directory afterwards, holding hard links
    to the unchanged tar and to what else was there, with dest's mode; a killed run's leftovers beside it go."""
    hub, root = two_models
    cache, dest = tmp_path / "c", tmp_path / "b"
    seeding = run_tasks([download(hub, cache, "o/alpha"), download(hub, cache, "o/beta"), bundle(cache, dest)])
    assert not any(r.get("failed") for r in seeding.results)
    (dest / "README").write_text("served by nginx\n")
    dest.chmod(0o750)
    leftover = tmp_path / ".b.k1ll3d0x.tmp"
    leftover.mkdir()
    (leftover / "o--beta--master.tar").write_bytes(b"half")
    before = {p.name: p.stat().st_ino for p in dest.iterdir()}
    (dest / ".lock").touch()  # where earlier releases kept their lock: it goes
    dest_before = dest.stat()

    push_commit(root, "o/beta", {"b.bin": os.urandom(1 << 19)})
    run = run_tasks([download(hub, cache, "o/beta"), bundle(cache, dest)])
    assert run[1]["changed"] and "1 model(s) changed commit" in run[1]["msg"], run[1]["msg"]
    after = {p.name: p.stat().st_ino for p in dest.iterdir()}
    assert dest.stat().st_ino != dest_before.st_ino and dest.stat().st_mode == dest_before.st_mode
    assert sorted(after) == sorted(before)
    assert {n for n in after if after[n] == before[n]} == {"README", "o--alpha--master.tar"}
    assert (dest / "README").read_text() == "served by nginx\n"
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=dest, check=False).returncode == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_dest_with_a_subdirectory_is_updated_in_place(two_models, tmp_path):
    """A dest that also holds directories cannot be swapped by hard links: the new files are renamed into it."""
    hub, root = two_models
    cache, dest = tmp_path / "c", tmp_path / "b"
    assert not any(r.get("failed") for r in run_tasks([download(hub, cache, "o/alpha"), bundle(cache, dest)]).results)
    (dest / "docs").mkdir()
    (dest / "docs" / "index.html").write_text("<p>models</p>")
    inode = dest.stat().st_ino
    push_commit(root, "o/alpha", {"cfg.json": b'{"v": 2}'})
    run = run_tasks([download(hub, cache, "o/alpha"), bundle(cache, dest)])
    assert run[1]["changed"] and "1 model(s) changed commit" in run[1]["msg"], run[1]["msg"]
    assert dest.stat().st_ino == inode and (dest / "docs" / "index.html").read_text() == "<p>models</p>"
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=dest, check=False).returncode == 0
    assert read_manifest(dest)["models"][0]["commit"] == run[0]["commit"]
    assert [p.name for p in dest.iterdir() if p.name.endswith(".tmp")] == []
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
