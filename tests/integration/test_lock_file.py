"""The lock file through the staging role on localhost against a hub of its own.

One hub, two models. The first run writes the lock; the hub's master then moves. A second staging cache at another
path, run with another umask, fetches exactly the locked commits and builds a bundle byte for byte the first one;
updating one model moves only that model's entry. Separately, a hub whose files change under the locked commit fails
the download, in check mode and for real, listing what differs, with nothing downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import yaml

from support.module_process import run_module, run_modules
from support.mshub import MsHub, make_repo, push_commit
from support.mshub.store import COMMITS_DIR, HUB_DIR
from support.playbook import ANSIBLE_PLAYBOOK, ansible_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALPHA, BETA = "lock/Alpha-Test", "lock/Beta-Test"
# Commit times in the past: a bundle built from the lock must carry them, not the time of the run.
CREATED = 1_600_000_000


def files_of(seed: int) -> dict[str, bytes]:
    return {"config.json": b'{"seed": %d}' % seed, "weights/model.bin": os.urandom(2048) + bytes([seed]),
            "name with space.txt": b"kept as is"}


@pytest.fixture
def lock_hub(tmp_path):
    root = tmp_path / "hub"
    commits = {model: make_repo(root, model, files_of(i), versioned=True, created_at=CREATED) for i, model in enumerate((ALPHA, BETA))}
    with MsHub(root, redirect_threshold=None) as server:
        server.first_commits = commits
        yield server


def run_staging(tmp_path: Path, hub: MsHub, name: str, lock: Path, *, update=None, umask: int = 0o022,
                tags: str = "download,bundle") -> subprocess.CompletedProcess:
    """The staging role with cache and bundle under ``tmp_path/name``; returns the finished ansible-playbook.

    The serve phase is left out: nothing is served here (and its tasks would only look for an nginx to stop)."""
    play_vars = {
        "ansible_python_interpreter": sys.executable,
        "modelseed_models": [{"name": model} for model in (ALPHA, BETA)],
        "modelseed_lock_file": str(lock),
        "staging_cache_dir": str(tmp_path / name / "cache"),
        "staging_bundle_dir": str(tmp_path / name / "bundle"),
        "staging_http_state_dir": str(tmp_path / name / "http"),
        "staging_endpoint": hub.url,
        "staging_serve": False,
        "staging_poll_interval": 5,
    }
    if update is not None:
        play_vars["modelseed_lock_update"] = update
    playbook = tmp_path / f"{name}.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "vars": play_vars,
                                         "roles": [{"role": "modelseed.fleet.staging"}]}], sort_keys=False))
    cmd = [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(playbook), "--tags", tags]
    # Pipelining: each task's module goes to its Python on stdin, without the shells that make, fill and remove a
    # temporary directory for it. The download jobs' status files go to a directory of the test's own.
    env = ansible_env(ANSIBLE_PIPELINING="1", ANSIBLE_ASYNC_DIR=str(tmp_path / "async"))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False, preexec_fn=lambda: os.umask(umask))


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"{proc.stdout[-15000:]}\n{proc.stderr[-5000:]}"


def blocks(lock: Path) -> dict[str, list[str]]:
    """The lock's lines per model, as the documented format lays them out."""
    out: dict[str, list[str]] = {}
    current = None
    for line in lock.read_text().splitlines():
        if line.startswith("model "):
            current = out.setdefault(line[len("model "):], [])
        elif current is not None and line:
            current.append(line)
    return out


def hub_lines(hub: MsHub, model: str, commit: str) -> list[str]:
    """The lock lines a model at ``commit`` must have, from the hub's own store."""
    repo = hub.store.repo(*model.split("/"))
    lines = ["revision master", f"commit {commit}", f"created_at {repo.commit_info(commit)['created_at']}"]
    lines += [f"file {f.sha256} {f.size} {repo.last_change(commit, f)} {f.path}" for f in sorted(repo.files(commit), key=lambda f: f.path)]
    return lines


def bundle_bytes(bundle: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the bundle (the tree form's model directories included) with its bytes and mode."""
    return {str(p.relative_to(bundle)): (p.read_bytes(), p.stat().st_mode) for p in sorted(bundle.rglob("*")) if p.is_file()}


def changed_at(cache: Path) -> list[float]:
    """When each file of ``cache`` was last written (change times: a download may set a file's modification time)."""
    return [p.stat().st_ctime for p in cache.rglob("*") if p.is_file()]


def downloads_at(hub: MsHub, mark: int) -> set[tuple[str, str, str]]:
    """(model, file, revision asked for) of every file the hub served since ``mark``."""
    return {(r.model, r.file, parse_qs(r.query)["Revision"][0]) for r in hub.log.entries(mark) if r.download}


def test_lock_is_written_honoured_rebuilt_and_updated(lock_hub, tmp_path):
    hub, lock = lock_hub, tmp_path / "modelseed.lock"
    ok(run_staging(tmp_path, hub, "first", lock))
    first = hub.first_commits
    assert blocks(lock) == {model: hub_lines(hub, model, first[model]) for model in (ALPHA, BETA)}
    assert lock.read_text().splitlines()[1] == "modelseed-lock 1"
    written = lock.read_bytes()

    # master moves on for both models: a file changed, a file added.
    moved = {model: push_commit(hub.store.root, model, {"config.json": b'{"moved": true}', "extra.txt": b"new"},
                                created_at=CREATED + 100) for model in (ALPHA, BETA)}

    # Honour, and rebuild elsewhere: another cache path, another umask; exactly the locked files, the same bundle bytes.
    mark = len(hub.log)
    second = run_staging(tmp_path, hub, "second", lock, umask=0o077)
    ok(second)
    expected = {(model, path, first[model]) for model in (ALPHA, BETA) for path in files_of(0)}
    assert downloads_at(hub, mark) == expected
    assert lock.read_bytes() == written
    assert "the hub has moved master to %s" % moved[ALPHA][:12] in second.stdout
    # Later in time, too: the second cache was written more than a second after the first (the first run's bundle and
    # the second run's start lie between), as the files' change times say.
    assert min(changed_at(tmp_path / "second" / "cache")) >= max(changed_at(tmp_path / "first" / "cache")) + 1
    first_bundle = bundle_bytes(tmp_path / "first" / "bundle")
    assert bundle_bytes(tmp_path / "second" / "bundle") == first_bundle

    # Update one model on purpose: only its entry moves, only its new files are fetched.
    mark = len(hub.log)
    ok(run_staging(tmp_path, hub, "second", lock, update=[ALPHA], tags="download"))
    assert blocks(lock) == {ALPHA: hub_lines(hub, ALPHA, moved[ALPHA]), BETA: hub_lines(hub, BETA, first[BETA])}
    assert downloads_at(hub, mark) == {(ALPHA, "config.json", moved[ALPHA]), (ALPHA, "extra.txt", moved[ALPHA])}
    # Every download job was seen to end and its status file removed.
    assert (tmp_path / "async").is_dir() and not any((tmp_path / "async").iterdir())


def test_a_hub_changed_under_the_lock_fails_listing_what_differs(lock_hub, tmp_path):
    hub, lock = lock_hub, tmp_path / "modelseed.lock"
    commit = hub.first_commits[BETA]
    repo = hub.store.repo(*BETA.split("/"))
    # Written by hand, as docs/lock-file.md describes the format.
    lock.write_text("modelseed-lock 1\n\nmodel %s\n%s\n" % (BETA, "\n".join(hub_lines(hub, BETA, commit))))
    # The same commit now serves other bytes for one file (a mirror rebuilt, a repository rewritten).
    tree = hub.store.root.joinpath(*BETA.split("/"), HUB_DIR, COMMITS_DIR, commit)
    (tree / "config.json.new").write_bytes(b'{"tampered": 1}')
    (tree / "config.json.new").rename(tree / "config.json")
    assert repo.file(commit, "config.json").size == len(b'{"tampered": 1}')

    # What the role does, each module as the process Ansible runs: read the lock, download in check mode (--check),
    # then for real.
    mark = len(hub.log)
    read = run_module("model_lock", {"path": str(lock), "models": [{"name": BETA}]}, tmp_path)
    assert read["pins"][BETA + "@master"]["commit"] == commit, read
    download = {"name": BETA, "cache_dir": str(tmp_path / "cache"), "layout": "all", "endpoint": hub.url, "locked": read["pins"][BETA + "@master"]}
    run = run_modules([{"modelseed.fleet.modelscope_model": download, "check_mode": True}, {"modelseed.fleet.modelscope_model": download}],
                      tmp_path)
    for result in run:
        assert result["failed"], result
        assert result["msg"].startswith("%s@master: the hub no longer serves what the lock pins at commit %s, nothing was downloaded: "
                                        % (BETA, commit[:12])), result["msg"]
        assert result["drift"] == ["config.json: locked 11 bytes sha256 %s, the hub has 15 bytes sha256 %s" % (
            repo_sha(hub, BETA, commit, "config.json", lock), repo.file(commit, "config.json").sha256[:12])], result
    assert downloads_at(hub, mark) == set()
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*") if ".modelseed" not in p.parts)
    assert lock.read_text().count("\nfile ") == 3  # the lock is left as it was


def repo_sha(hub: MsHub, model: str, commit: str, path: str, lock: Path) -> str:
    """The sha256 (12 digits) the lock names for ``path``."""
    return next(line.split()[1] for line in blocks(lock)[model] if line.startswith("file ") and line.endswith(" " + path))[:12]
