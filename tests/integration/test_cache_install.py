"""cache_install through ansible-playbook: idempotence, hostile bundles, kills, a full disk, http(s) sources.

Bundles come from tests/support/bundles.py, which writes them as bundle_format.py defines them, and
crafts hostile ones whose manifest and SHA256SUMS agree with the tar: the installer must judge the
tar itself, and leave the cache byte for byte as it was.
"""

from __future__ import annotations

import base64
import dataclasses
import grp
import hashlib
import http.server
import io
import os
import pwd
import random
import shutil
import socket
import ssl
import stat
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from support.bundles import Member, ModelSpec, members_of, raw_tar, with_files, write_bundle
from support.interrupt import bytes_below, spawn, tree_digest, wait_until
from support.module_process import run_modules
from support.playbook import run_tasks
from support.processes import kill_tree
from support.reliability import record
from support.table_play import Row, run_table, table_play

MODEL = "Qwen/Qwen2.5-Tiny"
MODEL_DIR = "models/Qwen/Qwen2___5-Tiny"


def files_v1() -> dict[str, bytes]:
    rng = random.Random(7)
    return {
        "config.json": b'{"model_type": "qwen2"}',
        "weights/model-00001.safetensors": rng.randbytes(3 << 20),
        "weights/model-00002.safetensors": rng.randbytes((1 << 20) + 5),
        ".hidden/settings.json": b"{}",
        "name with space.txt": b"spaces",
        "empty.txt": b"",
    }


SPEC = ModelSpec(MODEL, files_v1())


def install(src, cache, **options) -> dict:
    return {"modelseed.fleet.cache_install": {"src": str(src), "cache_dir": str(cache), "layout": "all", **options}}


def run_one(task, **kwargs) -> dict:
    return run_tasks([task], **kwargs)[0]


def setup_run(task, workdir: Path) -> dict:
    """``task`` as the module process Ansible would start (its arguments in ``workdir``): for the state a test starts from,
    without ansible-playbook's start-up."""
    return run_modules([task], workdir)[0]


def stat_task(path: Path) -> dict:
    return {"ansible.builtin.stat": {"path": str(path)}}


def model_digest(model_dir: Path) -> dict[str, str]:
    return tree_digest(model_dir)


def leftovers(cache: Path) -> list[str]:
    state = cache / ".modelseed"
    return [str(p.relative_to(cache)) for kind in ("incoming", "trash") for p in (state / kind).glob("*")]


def assert_installed(model_dir: Path, files: dict[str, bytes]):
    for rel, data in files.items():
        assert (model_dir / rel).read_bytes() == data, rel


# -- an http(s) server for bundles -----------------------------------------------------------


class BundleServer:
    """Serves one directory: whole files or ``Range: bytes=N-``, optionally slowly, behind basic auth, over TLS,
    or cutting the first tar response short (a dropped connection)."""

    def __init__(self, root: Path, *, rate: int | None = None, auth: tuple[str, str] | None = None, tls=None,
                 drop_tar_after: int | None = None):
        self.root = root
        self.rate = rate
        self.auth = None if auth is None else "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self.drop_tar_after = drop_tar_after
        self.log: list[tuple[str, str | None, int]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("?")[0]
                if server.auth and self.headers.get("Authorization") != server.auth:
                    server.log.append((name, None, 401))
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="bundles"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = server.root / name
                if "/" in name or not path.is_file():
                    server.log.append((name, None, 404))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = path.stat().st_size
                start = 0
                wanted = self.headers.get("Range")
                if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
                    start = int(wanted[6:-1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(size - start))
                self.end_headers()
                server.log.append((name, wanted, 206 if wanted else 200))
                limit = None
                if name.endswith(".tar") and server.drop_tar_after is not None:
                    limit, server.drop_tar_after = server.drop_tar_after, None
                self._send(path, start, limit)

            def _send(self, path, start, limit):
                sent = 0
                began = time.monotonic()
                with path.open("rb") as handle:
                    handle.seek(start)
                    while True:
                        chunk = handle.read(64 << 10)
                        if not chunk:
                            return
                        if limit is not None and sent + len(chunk) >= limit:
                            self.wfile.write(chunk[:limit - sent])
                            self.wfile.flush()
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.close_connection = True
                            return
                        try:
                            self.wfile.write(chunk)
                        except OSError:
                            return
                        sent += len(chunk)
                        if server.rate:
                            ahead = sent / server.rate - (time.monotonic() - began)
                            if ahead > 0:
                                time.sleep(ahead)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls.cert), str(tls.key))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        # shutdown() waits for the loop's next look at its flag: every 0.1 s, as the test hub's, not the default half second.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# -- idempotence ---------------------------------------------------------------------------------


def test_check_real_check_real(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    cache = tmp_path / "cache"
    task = install(bundle, cache)
    # Then trash a killed run left: the cache holds every model, and still the run outside check mode has work.
    trash = {"ansible.builtin.file": {"path": str(cache / ".modelseed/trash/Qwen%2FQwen2.5-Tiny.1.1"), "state": "directory"}}
    run = run_tasks([{**task, "check_mode": True, "diff": True}, task, {**task, "check_mode": True}, task,
                     trash, {**task, "check_mode": True}, task, {**task, "check_mode": True}])
    assert [r["changed"] for r in run.results[:4]] == [True, True, False, False], [r.get("msg") for r in run.results]
    assert not any(r.get("failed") for r in run.results)
    assert [r["idle"] for r in run.results[:4] + run.results[5:]] == [False, False, True, True, False, False, True]
    assert not (cache / ".modelseed/trash/Qwen%2FQwen2.5-Tiny.1.1").exists()
    check, real, again = run.results[0], run.results[1], run.results[3]
    total = sum(len(v) for v in files_v1().values())
    assert check["bytes_installed"] == total and real["bytes_installed"] == total and again["bytes_installed"] == 0
    assert [m["action"] for m in check["models"]] == ["install"] and [m["action"] for m in again["models"]] == ["none"]
    assert "Qwen/Qwen2.5-Tiny@master" in check["diff"]["after"] and check["diff"]["before"] == "\n"
    # The messages a play shows say what happened, in the tense it happened.
    assert check["msg"] == f"would install 1 model(s): {MODEL}@master (new to this cache); would extract {total} bytes", check["msg"]
    assert real["msg"] == f"installed 1 model(s): {MODEL}@master (new to this cache); extracted {total} bytes", real["msg"]
    assert again["msg"] == "all 1 model(s) of the bundle are installed in layout all and recorded as verified", again["msg"]
    assert real["models"][0]["path"] == str(cache / MODEL_DIR) and real["layout"] == "all"
    assert_installed(cache / MODEL_DIR, files_v1())
    assert os.readlink(cache / "hub/Qwen/Qwen2___5-Tiny") == "../../models/Qwen/Qwen2___5-Tiny"
    assert os.readlink(cache / "models/Qwen/Qwen2.5-Tiny") == "Qwen2___5-Tiny"
    for name in (".msc", ".mdl", ".mv"):
        assert (cache / MODEL_DIR / name).stat().st_mode & 0o777 == 0o644
    assert (cache / MODEL_DIR / "config.json").stat().st_mtime == SPEC.created_at
    assert not leftovers(cache)


def test_second_run_reads_no_file_contents(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    cache = tmp_path / "cache"
    assert not setup_run(install(bundle, cache), tmp_path).get("failed")
    weights = cache / MODEL_DIR / "weights/model-00001.safetensors"
    # An atime older than the mtime: any read now moves it (relatime). The mtime stays what the record says.
    st = weights.stat()
    os.utime(weights, ns=(st.st_mtime_ns - 10**10, st.st_mtime_ns))
    atime = weights.stat().st_atime_ns
    with weights.open("rb") as probe:  # the probe works: a read does move it
        probe.read(1)
    assert weights.stat().st_atime_ns != atime
    os.utime(weights, ns=(st.st_mtime_ns - 10**10, st.st_mtime_ns))
    result = run_one(install(bundle, cache))
    assert result["changed"] is False, result["msg"]
    assert weights.stat().st_atime_ns == atime


LAYOUTS = [
    ("hub", "hub/Qwen/Qwen2___5-Tiny", True),
    ("models", MODEL_DIR, True),
    ("snapshots", "models/Qwen--Qwen2.5-Tiny/snapshots/master", False),
]


@pytest.fixture(scope="module")
def layout_rows(tmp_path_factory) -> tuple[dict[str, Row], dict[str, Path]]:
    """The bundle installed into a cache of its own in each of LAYOUTS, in one play: (rows, each layout's cache)."""
    bundle = write_bundle(tmp_path_factory.mktemp("layouts") / "bundle", [SPEC])
    caches = {layout: tmp_path_factory.mktemp(f"layout-{layout}") / "cache" for layout, _path, _metadata in LAYOUTS}
    return run_table({layout: install(bundle, caches[layout], layout=layout) for layout, _path, _metadata in LAYOUTS}), caches


@table_play("cache_install: layouts")
@pytest.mark.parametrize("layout, path, metadata", LAYOUTS)
def test_explicit_layouts(layout_rows, layout, path, metadata):
    rows, caches = layout_rows
    result, cache = rows[layout].result, caches[layout]
    assert result["changed"] and result["models"][0]["path"] == str(cache / path), result["msg"]
    assert_installed(cache / path, files_v1())
    assert (cache / path / ".msc").exists() == metadata


def test_changed_bundle_replaces_the_model_whole(tmp_path):
    cache = tmp_path / "cache"
    old = write_bundle(tmp_path / "old", [SPEC])
    new_files = {**files_v1(), "config.json": b'{"model_type": "qwen3"}', "extra.txt": b"new"}
    del new_files["name with space.txt"]
    new = write_bundle(tmp_path / "new", [ModelSpec(MODEL, new_files, created_at=1710000000)])
    stray_file = {"ansible.builtin.copy": {"dest": str(cache / MODEL_DIR / "stray.txt"), "content": "dropped by hand"}}
    seeding, stray, *run = run_tasks([install(old, cache), stray_file,
                                      {**install(new, cache), "check_mode": True}, install(new, cache), install(new, cache)]).results
    assert not seeding.get("failed") and stray["changed"], [seeding.get("msg"), stray.get("msg")]
    assert [r["changed"] for r in run] == [True, True, False], [r.get("msg") for r in run]
    assert run[1]["models"][0]["action"] == "replace" and "installed commit" in run[1]["msg"]
    assert_installed(cache / MODEL_DIR, new_files)
    assert not (cache / MODEL_DIR / "name with space.txt").exists() and not (cache / MODEL_DIR / "stray.txt").exists()
    assert not leftovers(cache)


def test_modified_file_is_noticed_from_stat_and_verify_full_catches_the_rest(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    cache = tmp_path / "cache"
    run_one(install(bundle, cache))
    victim = cache / MODEL_DIR / "weights/model-00002.safetensors"
    before = victim.stat()
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime: stat cannot tell
    # Then, after the two checks, a size that differs: the quick check sees it.
    sums = {"ansible.builtin.command": {"argv": ["sha256sum", "--", *sorted(files_v1())], "chdir": str(cache / MODEL_DIR)}}
    quick, full, restored, short, again = run_tasks([install(bundle, cache), install(bundle, cache, verify="full"), sums,
                                                     {"ansible.builtin.copy": {"dest": str(victim), "content": "short"}},
                                                     install(bundle, cache)]).results
    assert quick["changed"] is False, quick["msg"]
    assert full["changed"] and full["models"][0]["action"] == "replace" and "verify=full" in full["msg"], full["msg"]
    # What verify=full installed, before the file was cut short.
    assert restored["stdout_lines"] == [f"{hashlib.sha256(data).hexdigest()}  {rel}" for rel, data in sorted(files_v1().items())]
    assert short["changed"] and not short.get("failed"), short.get("msg")
    assert again["changed"] and "missing or changed" in again["msg"]
    assert_installed(cache / MODEL_DIR, files_v1())


def test_a_cache_seeded_by_download_is_adopted_without_extracting(hub, tmp_path):
    """modelscope_model recorded every file's sha256: the bundle's identical files need only a new record."""
    from support.bundles import spec_from_hub
    from support.sample_models import MODEL as HUB_MODEL
    from support.sample_models import model_files

    cache = tmp_path / "cache"
    weights = cache / "models/Qwen/Qwen2___5-0___5B-Test/weights/model-00001.bin"
    bundle = write_bundle(tmp_path / "bundle", [spec_from_hub(hub.url, HUB_MODEL, model_files())])
    seeded, downloaded, *run = run_tasks([
        {"modelseed.fleet.modelscope_model": {"name": HUB_MODEL, "cache_dir": str(cache), "endpoint": hub.url, "layout": "all"}},
        stat_task(weights), install(bundle, cache), install(bundle, cache)]).results
    assert not seeded.get("failed"), seeded["msg"]
    assert [r["changed"] for r in run] == [True, False], [r.get("msg") for r in run]
    assert run[0]["models"][0]["action"] == "fix" and run[0]["bytes_installed"] == 0, run[0]["msg"]
    assert "recorded from a download, with the same files" in run[0]["msg"]
    assert weights.stat().st_ino == downloaded["stat"]["inode"]


def test_metadata_links_and_modes_are_repaired_without_reinstalling(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    cache = tmp_path / "cache"
    weights = cache / MODEL_DIR / "weights/model-00001.safetensors"
    broken = [{"ansible.builtin.file": {"path": str(cache / MODEL_DIR / ".msc"), "state": "absent"}},
              {"ansible.builtin.file": {"path": str(cache / "hub/Qwen/Qwen2___5-Tiny"), "state": "absent"}},
              {"ansible.builtin.file": {"path": str(cache / MODEL_DIR / "config.json"), "mode": "0600"}}]
    first, installed, *breaking, result, again = run_tasks([install(bundle, cache), stat_task(weights), *broken,
                                                            install(bundle, cache), install(bundle, cache)]).results
    assert not first.get("failed") and all(r["changed"] for r in breaking), [first.get("msg"), *breaking]
    assert result["changed"] and result["models"][0]["action"] == "fix", result["msg"]
    assert ".msc" in result["msg"] and "link" in result["msg"] and "modes" in result["msg"]
    assert weights.stat().st_ino == installed["stat"]["inode"] and result["bytes_installed"] == 0
    assert (cache / MODEL_DIR / "config.json").stat().st_mode & 0o777 == 0o644
    assert again["changed"] is False


def test_prune_removes_only_recorded_models_of_the_layout(tmp_path):
    other = ModelSpec("o/other", {"a.bin": b"a" * 1000})
    cache = tmp_path / "cache"
    both = write_bundle(tmp_path / "both", [SPEC, other])
    only = write_bundle(tmp_path / "only", [SPEC])
    task = install(only, cache, prune=True)
    seeding, made, hand, keep, kept, *run = run_tasks([
        install(both, cache),
        {"ansible.builtin.file": {"path": str(cache / "models/hand/made"), "state": "directory"}},  # no record: never ours to remove
        {"ansible.builtin.copy": {"dest": str(cache / "models/hand/made/w.bin"), "content": "x"}},
        install(only, cache), stat_task(cache / "models/o/other/a.bin"),
        {**task, "check_mode": True, "diff": True}, task, task]).results
    assert not seeding.get("failed") and made["changed"] and hand["changed"], [seeding.get("msg"), made, hand]
    assert keep["changed"] is False and kept["stat"]["exists"]
    assert [r["changed"] for r in run] == [True, True, False], [r.get("msg") for r in run]
    assert {m["id"]: m["action"] for m in run[0]["models"]} == {MODEL: "none", "o/other": "remove"}
    assert "o/other" in run[0]["diff"]["before"] and "o/other" not in run[0]["diff"]["after"]
    assert not (cache / "models/o/other").exists() and not (cache / ".modelseed/records/models%2Fo%2Fother.json").exists()
    assert (cache / "models/hand/made/w.bin").exists()
    assert_installed(cache / MODEL_DIR, files_v1())


def test_two_revisions_that_share_a_directory_are_refused(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC, ModelSpec(MODEL, {"x": b"x"}, revision="v2")])
    result, ok = run_tasks([install(bundle, tmp_path / "cache", layout="models"),
                            install(bundle, tmp_path / "cache", layout="snapshots")]).results
    assert result["failed"] and "same directory" in result["msg"]
    assert not ok.get("failed"), ok["msg"]


def test_shared_group_modes(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    cache = tmp_path / "cache"
    task = install(bundle, cache, owner="root", group="nogroup", shared=True)
    run = run_tasks([task, task])
    assert [r["changed"] for r in run.results] == [True, False], [r.get("msg") for r in run.results]
    gid = int(subprocess.run(["getent", "group", "nogroup"], capture_output=True, text=True, check=True).stdout.split(":")[2])
    for path in [cache, *cache.rglob("*")]:
        if ".modelseed" in path.parts or path.is_symlink():
            continue
        st = path.stat()
        assert st.st_gid == gid and st.st_uid == 0, path
        assert not st.st_mode & 0o002, path
        if path.is_dir():
            assert st.st_mode & stat.S_ISGID, path
    for rel in ("", ".lock", "models/._____temp", "hub/._____temp"):
        assert (cache / rel).stat().st_mode & 0o7777 == 0o2775, rel
    assert (cache / MODEL_DIR / ".mdl").stat().st_mode & 0o777 == 0o664
    assert (cache / MODEL_DIR / "config.json").stat().st_mode & 0o777 == 0o644
    # Taking the group away again is a change of modes, not a reinstall.
    back = run_one(install(bundle, cache, group="root"))
    assert back["changed"] and back["models"][0]["action"] == "fix", back["msg"]
    assert (cache / MODEL_DIR / "config.json").stat().st_gid == 0


def test_restrictive_modes_reach_everything_written_for_a_model(tls_hub, tls, sdk, open_dir):
    """file_mode 0640 and dir_mode 0750 for the runtime user: the model's files, its SDK metadata, its record and lock,
    the directories above it and above its links, the state directories. SDK 1.37, which writes into the model directory
    and the cache root as it loads, still loads as that user, offline and online."""
    from support.bundles import spec_from_hub
    from support.judging import judge
    from support.sample_models import MODEL as HUB_MODEL
    from support.sample_models import model_files

    bundle = write_bundle(open_dir / "bundle", [spec_from_hub(tls_hub.url, HUB_MODEL, model_files(), ca_path=str(tls.ca))])
    cache = open_dir / "cache"
    task = install(bundle, cache, owner="nobody", group="nogroup", file_mode="0640", dir_mode="0750")
    result = run_one(task)
    assert result["changed"] and not result.get("failed"), result["msg"]
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    seen, wrong = set(), []
    for path in [cache, *cache.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        want = 0o750 if stat.S_ISDIR(st.st_mode) else 0o640
        seen.add(str(path.relative_to(cache)))
        if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (uid, gid, want):
            wrong.append(f"{path.relative_to(cache)}: {st.st_uid}:{st.st_gid} {oct(stat.S_IMODE(st.st_mode))}")
    assert not wrong, wrong
    model_dir, key = "models/Qwen/Qwen2___5-0___5B-Test", "models%2FQwen%2FQwen2___5-0___5B-Test"
    assert {f"{model_dir}/.msc", f"{model_dir}/.mdl", f"{model_dir}/.mv", f".modelseed/records/{key}.json", f".modelseed/locks/{key}.lock",
            "hub/Qwen", "models/Qwen", "."} <= seen, sorted(seen)
    readable = dataclasses.replace(tls, ca=Path(shutil.copy(tls.ca, open_dir / "ca.pem")))  # nobody cannot read pytest's tmp
    judge(sdk("1.37.1"), cache, tls_hub, readable, user="nobody")
    assert run_one(task)["changed"] is False


def test_bad_options(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    cases = [
        (install(bundle, tmp_path / "c", file_mode="0666"), "world-writable"),
        (install(bundle, tmp_path / "c", dir_mode="rwx"), "octal"),
        (install(bundle, tmp_path / "c", shared=True), "group"),
        (install(bundle, tmp_path / "c", group="no-such-group-here"), "does not exist"),
        (install(tmp_path / "nowhere", tmp_path / "c"), "not a directory"),
        (install("ftp://example.invalid/b", tmp_path / "c"), "http(s) URL"),
    ]
    run = run_tasks([task for task, message in cases])
    for result, message in zip(run.results, [message for task, message in cases], strict=True):
        assert result.get("failed") and message in result["msg"], (message, result["msg"])
    assert not (tmp_path / "c").exists()


# -- hostile bundles -------------------------------------------------------------------------------


FIRST = ModelSpec("a/first", {"fine.txt": b"a valid model staged before the hostile one"})
# What the hostile bundles claim to hold: a new commit of MODEL, so the installed one would be replaced.
UPDATE = with_files(SPEC, {"config.json": b'{"model_type": "qwen2", "update": 2}'}, created_at=1710000000)
EVIL_TARGET = f"/tmp/modelseed-evil-{uuid.uuid4().hex}"


def with_members(spec, extra, before=None):
    """The honest members of ``spec`` plus ``extra``, inserted before member ``before`` (else at the end)."""
    members = members_of(spec)
    index = next((i for i, m in enumerate(members) if m.name == before), len(members))
    return raw_tar(members[:index] + list(extra) + members[index:])


def without(spec, name):
    return raw_tar([m for m in members_of(spec) if m.name != name])


def replaced(spec, name, member):
    return raw_tar([member if m.name == name else m for m in members_of(spec)])


def _truncated_mid_file(spec):
    """Cut one byte short of the last file's end: still larger than the files it claims, as a real tar is."""
    data = raw_tar(members_of(spec))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        last = [m for m in tar.getmembers() if m.isfile() and m.size][-1]
    return data[:last.offset_data + last.size - 1]


def _without_end_marker(spec):
    data = raw_tar(members_of(spec))
    end = len(data.rstrip(b"\0"))
    return data[:(end + 511) // 512 * 512]


def _tar(builder):
    return lambda spec, directory: write_bundle(directory, [FIRST, spec], tars={spec.id: builder(spec)})


def _after(mutate):
    def build(spec, directory):
        write_bundle(directory, [FIRST, spec])
        mutate(directory / "Qwen--Qwen2.5-Tiny--master.tar", directory)
        return directory
    return build


def _garbage_in_padding(tar, directory):
    data = bytearray(tar.read_bytes())
    data[-100:] = b"G" * 100
    tar.write_bytes(bytes(data))


def _appended(tar, directory):
    with tar.open("ab") as handle:
        handle.write(b"\0" * 512 + b"trailing")


def _manifest_edited(tar, directory):
    manifest = directory / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"created_at": 1710000000', b'"created_at": 1710000001', 1))


def _flipped_byte(tar, directory):
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 1
    tar.write_bytes(bytes(data))


HOSTILE = {
    "dotdot": (_tar(lambda s: with_members(s, [Member("../escaped.txt", data=b"x")], before="config.json")), "has an unsafe name"),
    "dotdot in a pax path": (_tar(lambda s: with_members(s, [Member("../../" + "x" * 120, data=b"x")])), "has an unsafe name"),
    "absolute": (_tar(lambda s: with_members(s, [Member(EVIL_TARGET, data=b"x")])), "unsafe name"),
    "symlink out": (_tar(lambda s: with_members(s, [Member("evil", kind="symlink", linkname="/etc"),
                                                    Member("evil/owned", data=b"x")])), "symbolic link -> '/etc', pointing outside"),
    "symlink up": (_tar(lambda s: with_members(s, [Member("weights/up", kind="symlink", linkname="../../../x")])), "pointing outside"),
    "symlink inside": (_tar(lambda s: with_members(s, [Member("alias.json", kind="symlink", linkname="config.json")])), "symbolic link"),
    "hardlink": (_tar(lambda s: with_members(s, [Member("hard", kind="hardlink", linkname="config.json")])), "is a hard link"),
    "char device": (_tar(lambda s: with_members(s, [Member("null", kind="chr")])), "character device"),
    "block device": (_tar(lambda s: with_members(s, [Member("disk", kind="blk")])), "block device"),
    "fifo": (_tar(lambda s: with_members(s, [Member("pipe", kind="fifo")])), "FIFO"),
    "duplicate": (_tar(lambda s: with_members(s, [Member("config.json", data=s.files["config.json"])])), "appears twice"),
    "file and directory": (_tar(lambda s: with_members(s, [Member("weights", data=b"")])), "both a file and a directory"),
    "inside a file": (_tar(lambda s: with_members(s, [Member("config.json/x", data=b"x")], before="empty.txt")),
                      "holds as a file"),
    "directory as file": (_tar(lambda s: replaced(s, "weights", Member("weights", data=b""))), "both a file and a directory"),
    "not in manifest": (_tar(lambda s: with_members(s, [Member("extra.bin", data=b"surprise")])), "'extra.bin' is not in the manifest"),
    "unlisted directory": (_tar(lambda s: with_members(s, [Member("spare", kind="dir")])), "'spare' is not in the manifest"),
    "size mismatch": (_tar(lambda s: raw_tar(members_of(with_files(s, {"config.json": b"{}"}, commit=s.resolved_commit())))),
                      "'config.json' has 2 bytes, the manifest says"),
    "hash mismatch": (_tar(lambda s: raw_tar(members_of(with_files(s, {"config.json": b'{"model_type": "qwen2", "update": 6}'}, commit=s.resolved_commit())))),
                      "'config.json' has sha256"),
    "metadata mismatch": (_tar(lambda s: replaced(s, ".mv", Member(".mv", data=b"Revision:master,CreatedAt:1700000009"))),
                          "'.mv' has sha256"),
    "missing member": (_tar(lambda s: without(s, "empty.txt")), "not in Qwen--Qwen2.5-Tiny--master.tar, for example 'empty.txt'"),
    "ends mid-file": (_tar(_truncated_mid_file), "ends early"),
    "no end-of-archive": (_tar(_without_end_marker), "ends early, in a header"),
    "garbage after the end": (_after(_garbage_in_padding), "after its end-of-archive marker"),
    "appended garbage": (_after(_appended), "the manifest says"),
    "manifest edited": (_after(_manifest_edited), "manifest.json has sha256"),
    "flipped byte": (_after(_flipped_byte), "has sha256"),
}


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    """A cache holding MODEL and another model, installed from a valid bundle; tests work on copies."""
    top = tmp_path_factory.mktemp("victim")
    bundle = write_bundle(top / "bundle", [SPEC, ModelSpec("o/other", {"a.bin": b"a" * 1000})])
    result = setup_run(install(bundle, top / "cache"), top)
    assert not result.get("failed"), result["msg"]
    return top / "cache"


@pytest.fixture(scope="module")
def hostile_rows(victim, tmp_path_factory) -> tuple[dict[str, Row], dict[str, Path]]:
    """Every hostile bundle against a copy of the victim cache, each in a directory of its own, in one play:
    (rows whose look is the cache's digest and the names beside it, each case's directory)."""
    top = tmp_path_factory.mktemp("hostile")
    works, tasks = {}, {}
    for index, case in enumerate(sorted(HOSTILE)):
        work = works[case] = top / f"case-{index}" / "work"
        work.mkdir(parents=True)
        subprocess.run(["cp", "-a", str(victim), str(work / "cache")], check=True)
        tasks[case] = install(HOSTILE[case][0](UPDATE, work / "bundle"), work / "cache")
    rows = run_table(tasks, lambda case: (tree_digest(works[case] / "cache"), sorted(p.name for p in works[case].iterdir())))
    return rows, works


@pytest.mark.hostile
@table_play("hostile bundles")
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bundle_is_refused_and_the_cache_unchanged(hostile_rows, case):
    rows, works = hostile_rows
    message = HOSTILE[case][1]
    work = works[case]
    cache = work / "cache"
    row = rows[case]
    result, (before, around), (after, around_after) = row.result, row.before, row.after
    escaped = [p for p in (Path(EVIL_TARGET), work / "escaped.txt", cache / "escaped.txt") if os.path.lexists(p)]
    unchanged = after == before and around_after == around and not leftovers(cache)
    # The result says what happened: nothing changed, nothing installed, the rejected model refused.
    actions = {m["id"]: m["action"] for m in result.get("models", [])}
    said = result.get("changed") is False and result.get("bytes_installed") == 0 and set(actions.values()) <= {"refused", "none"}
    record("bad input: crafted bundle", outcome="fails clearly, nothing written", corrupt=len(escaped),
           handled=int(bool(result.get("failed")) and message in result.get("msg", "") and unchanged and not escaped and said))
    assert result.get("failed"), f"{case}: accepted: {result.get('msg')}"
    assert message in result["msg"], result["msg"]
    assert result["changed"] is False and result["bytes_installed"] == 0, (result["changed"], result["bytes_installed"])
    if case == "manifest edited":  # refused before any model is looked at
        assert actions == {}, actions
    else:
        assert actions == {MODEL: "refused", FIRST.id: "none"}, actions
        assert result["msg"].endswith("; no model in the cache was changed"), result["msg"]
    if "manifest" not in case:
        assert "Qwen/Qwen2.5-Tiny@master" in result["msg"], result["msg"]
    assert after == before
    assert around_after == around
    assert not os.path.lexists(EVIL_TARGET) and not (work / "escaped.txt").exists() and not (cache / "escaped.txt").exists()
    assert not (cache / "models/a/first").exists()  # valid, staged first, never moved in
    assert not leftovers(cache)


# -- interruptions -----------------------------------------------------------------------------------


def wait_for_staging(cache: Path, proc, minimum: int = 1, timeout: float = 120) -> bool:
    """Until the staging area holds ``minimum`` bytes of files (or the run ended)."""
    return wait_until(lambda: bytes_below(cache / ".modelseed/incoming") >= minimum, proc, timeout, step=0.01)


@pytest.mark.hostile
def test_kill_while_streaming_from_a_slow_server_leaves_the_cache_unchanged(tmp_path):
    cache = tmp_path / "cache"
    old = write_bundle(tmp_path / "old", [SPEC])
    assert not setup_run(install(old, cache), tmp_path).get("failed")
    new_files = {**files_v1(), "weights/model-00001.safetensors": random.Random(9).randbytes(6 << 20)}
    new = write_bundle(tmp_path / "new", [ModelSpec(MODEL, new_files)])
    before = tree_digest(cache)
    with BundleServer(new, rate=2 << 20) as server:
        proc = spawn([install(server.url, cache)], tmp_path).proc
        assert wait_for_staging(cache, proc, minimum=1 << 20), "the install never got going"
        kill_tree(proc.pid)
        proc.wait()
        unchanged = {k: v for k, v in tree_digest(cache).items() if not k.startswith(".modelseed")} == \
            {k: v for k, v in before.items() if not k.startswith(".modelseed")}
        staged = bool(leftovers(cache))
        server.rate = None
        result = run_one(install(server.url, cache))
    record("kill -9 cache_install while streaming from a url", outcome="cache unchanged; next run completes", corrupt=int(not unchanged),
           handled=int(unchanged and staged and not result.get("failed") and not leftovers(cache)))
    assert unchanged
    assert staged, "the kill came after the staging was cleaned"
    assert result["changed"] and not result.get("failed"), result["msg"]
    assert_installed(cache / MODEL_DIR, new_files)
    assert not leftovers(cache)


# -- a full disk ---------------------------------------------------------------------------------------


@pytest.mark.hostile
def test_not_enough_space_fails_first_with_the_numbers(tmp_path, small_fs):
    cache = small_fs / "cache"
    small = write_bundle(tmp_path / "small", [SPEC])
    assert not setup_run(install(small, cache), tmp_path).get("failed")
    before = tree_digest(cache)
    rng = random.Random(3)
    big = write_bundle(tmp_path / "big", [with_files(SPEC, {"weights/huge.bin": rng.randbytes(16 << 20)})])
    result = run_one(install(big, cache))
    intact = tree_digest(cache) == before
    record("disk full: bundle larger than the free space", outcome="fails before writing, with needed and free bytes; cache unchanged",
           handled=int(bool(result.get("failed")) and "bytes needed" in result["msg"] and intact and not leftovers(cache)), corrupt=int(not intact))
    assert result["failed"] and "not enough space" in result["msg"] and "bytes needed" in result["msg"], result["msg"]
    assert "bytes free" in result["msg"] and str(small_fs) in result["msg"]
    assert tree_digest(cache) == before and not leftovers(cache)


@pytest.mark.hostile
def test_disk_filling_up_during_the_install_is_cleaned_up(tmp_path, small_fs):
    """Room at the check, none a moment later (another writer): a clear error, the cache as it was, no staged copy left."""
    cache = small_fs / "cache"
    assert not setup_run(install(write_bundle(tmp_path / "small", [SPEC]), cache), tmp_path).get("failed")
    before = tree_digest(cache)
    more = random.Random(4).randbytes(6 << 20)  # fits beside the old copy, at the check
    new = write_bundle(tmp_path / "new", [with_files(SPEC, {"weights/more.bin": more})])
    filler = small_fs / "filler"
    filled = []
    finished = threading.Event()

    def fill_when_staging_starts():
        incoming = cache / ".modelseed/incoming"
        while not finished.is_set():
            if incoming.is_dir() and sum(p.stat().st_size for p in incoming.rglob("*") if p.is_file()) > (1 << 20):
                break
            time.sleep(0.01)
        else:
            return
        with filler.open("wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * (1 << 20))
                    handle.flush()
            except OSError as exc:
                filled.append(exc)

    with BundleServer(new, rate=4 << 20) as server:
        filling = threading.Thread(target=fill_when_staging_starts)
        filling.start()
        result = run_one(install(server.url, cache))
        finished.set()
        filling.join()
        assert filled, f"the filler never ran: {result.get('msg')}"
        filler.unlink()
        intact = tree_digest(cache) == before
        record("disk full: filesystem fills during the install", outcome="fails with needed and free bytes; staged copy removed; cache unchanged",
               handled=int(bool(result.get("failed")) and "bytes needed" in result["msg"] and intact and not leftovers(cache)),
               corrupt=int(not intact))
        assert result["failed"] and "No space left on device" in result["msg"], result["msg"]
        assert f"{len(more) + sum(map(len, files_v1().values()))} bytes needed" in result["msg"] and "bytes and" in result["msg"], result["msg"]
        assert tree_digest(cache) == before
        assert not leftovers(cache), "the staged copy was not removed"
        server.rate = None
        again = run_one(install(server.url, cache))
    assert not again.get("failed"), again["msg"]
    assert_installed(cache / MODEL_DIR, {**files_v1(), "weights/more.bin": more})


# -- http(s) ---------------------------------------------------------------------------------------------


def test_install_from_http_url(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    cache = tmp_path / "cache"
    with BundleServer(bundle) as server:
        task = install(server.url.rstrip("/"), cache)
        run = run_tasks([{**task, "check_mode": True}, task, task])
        tar_gets = [entry for entry in server.log if entry[0].endswith(".tar")]
    assert [r["changed"] for r in run.results] == [True, True, False], [r.get("msg") for r in run.results]
    assert len(tar_gets) == 1, "the tar was read more than once, or in check mode"
    assert_installed(cache / MODEL_DIR, files_v1())


def test_dropped_connection_resumes_where_it_broke(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    with BundleServer(bundle, drop_tar_after=(2 << 20) + 1234) as server:
        result = run_one(install(server.url, tmp_path / "cache", retries=2))
        tar_gets = [entry for entry in server.log if entry[0].endswith(".tar")]
    assert not result.get("failed"), result["msg"]
    assert [rng for name, rng, status in tar_gets] == [None, f"bytes={(2 << 20) + 1234}-"]
    assert_installed(tmp_path / "cache" / MODEL_DIR, files_v1())


def test_basic_auth_and_the_password_never_shown(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    secret = "pa55-w0rd-never-shown"
    with BundleServer(bundle, auth=("fleet", secret)) as server:
        run = run_tasks([install(server.url, tmp_path / "c1", url_username="fleet", url_password="wrong"),
                         install(server.url, tmp_path / "c2", url_username="fleet", url_password=secret)], verbosity=4)
    denied = run[0]
    assert denied["failed"] and "HTTP 401" in denied["msg"]
    assert not run[1].get("failed"), run[1]["msg"]
    assert secret not in run.stdout + run.stderr
    for path in (tmp_path / "c2").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_https_with_an_untrusted_certificate_fails_clearly(tmp_path, tls):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    with BundleServer(bundle, tls=tls) as server:
        untrusted, trusted = run_tasks([install(server.url, tmp_path / "c1", retries=0),
                                        install(server.url, tmp_path / "c2", ca_path=str(tls.ca))]).results
    assert untrusted["failed"] and "TLS certificate" in untrusted["msg"] and "not trusted" in untrusted["msg"], untrusted["msg"]
    assert not (tmp_path / "c1" / MODEL_DIR).exists()
    assert not trusted.get("failed"), trusted["msg"]
    assert_installed(tmp_path / "c2" / MODEL_DIR, files_v1())


def test_missing_bundle_files(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", [SPEC])
    (bundle / "SHA256SUMS").unlink()
    with BundleServer(bundle) as server:
        result, remote = run_tasks([install(bundle, tmp_path / "cache"), install(server.url, tmp_path / "cache")]).results
    assert result["failed"] and "SHA256SUMS is missing" in result["msg"]
    assert remote["failed"] and "SHA256SUMS is missing" in remote["msg"]
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
