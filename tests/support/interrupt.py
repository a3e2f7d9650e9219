"""Runs to interrupt: ansible-playbook in the background, killed with SIGKILL at a chosen moment, and
digests of the trees it leaves, to tell the state before the run from the state after it.

A kill first stops the whole process tree, then looks whether the module's process was still running and
whether its work was already in place, then kills: ``Kill.timing`` says which moment the kill hit."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from support.module_process import module_command, module_of, parse_result
from support.playbook import ansible_env, playbook_command, results_env, results_task, write_playbook
from support.processes import command_line, freeze_tree, is_alive, kill_tree

BEFORE_COMPLETION = "before completion"
AFTER_COMPLETION = "after completion"
MISSED = "missed"


@dataclass
class Kill:
    """What one SIGKILL hit: whether the module's process was alive (running or stopped, not a zombie), and whether
    its work was in place (None where that was not asked)."""

    module_alive: bool
    work_done: bool | None

    @property
    def timing(self) -> str:
        """``before completion`` or ``after completion`` of the module's work, or ``missed``: the module had exited."""
        if not self.module_alive:
            return MISSED
        return AFTER_COMPLETION if self.work_done else BEFORE_COMPLETION


def module_pids(pids: list[int], module: str) -> list[int]:
    """Those of ``pids`` that run ``module``: ansible starts it as ``python .../AnsiballZ_<module>.py``, ``spawn_module``
    as ``python .../plugins/modules/<module>.py``."""
    names = (f"AnsiballZ_{module}.py", f"/plugins/modules/{module}.py")
    return [pid for pid in pids if any(arg.endswith(names) for arg in command_line(pid)[1:2])]


@dataclass
class Background:
    """A playbook started by ``spawn`` (or a module process, by ``spawn_module``); ``results()`` reads its tasks'
    results once it has ended."""

    proc: subprocess.Popen
    results_file: Path
    started: float
    module_process: bool = False

    def kill(self, module: str | None = None, work_done: Callable[[], bool] | None = None) -> Kill | None:
        """SIGKILL the whole tree. With ``module``: stop the tree first and tell whether that module's process was
        still alive, and (``work_done``, asked while everything stands still) whether its work was in place."""
        if module is None:
            kill_tree(self.proc.pid)
            self.proc.wait()
            return None
        frozen = freeze_tree(self.proc.pid)
        alive = any(is_alive(pid) for pid in module_pids(frozen, module))
        done = work_done() if work_done is not None else None
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        return Kill(module_alive=alive, work_done=done)

    def wait(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout)

    def results(self) -> list[dict]:
        assert self.results_file.exists(), f"the run ended ({self.proc.returncode}) without saving its results"
        if self.module_process:
            output = subprocess.CompletedProcess(self.proc.args, self.proc.returncode, self.results_file.read_text(), "")
            return [parse_result(output)]
        saved = json.loads(self.results_file.read_text())
        return [saved[key] for key in sorted(saved, key=lambda k: int(k.split("_")[1]))]


def spawn(tasks: list[dict], workdir: Path, env: dict[str, str] | None = None) -> Background:
    """Run ``tasks`` in the background (each registered, allowed to fail, results saved at the end).

    Ansible cannot clean up after a SIGKILL, so its temporary files (module payloads) go below ``workdir``,
    not into the system's /tmp."""
    name = uuid.uuid4().hex[:8]
    results_file = workdir / f"results-{name}.json"
    play_tasks = [{**task, "register": f"step_{i}", "ignore_errors": True} for i, task in enumerate(tasks)]
    play_tasks.append(results_task(len(tasks), results_file))
    playbook = write_playbook(play_tasks, workdir / f"play-{name}.yml")
    scratch = workdir / "ansible-tmp"
    scratch.mkdir(exist_ok=True)
    full_env = results_env(ansible_env(TMPDIR=str(scratch), ANSIBLE_REMOTE_TMP=str(scratch / "remote"),
                                       ANSIBLE_LOCAL_TEMP=str(scratch / "local"), **(env or {})))
    proc = subprocess.Popen(playbook_command(playbook), env=full_env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Background(proc, results_file, time.monotonic())


def spawn_module(task: dict, workdir: Path, env: dict[str, str] | None = None) -> Background:
    """Start ``task`` (one module of this collection) in the background as the process Ansible would start
    (``support.module_process``), without ansible-playbook; its output goes to a file that ``results()`` reads."""
    command, full_env = module_command(*module_of(task), workdir)
    results_file = workdir / f"results-{uuid.uuid4().hex[:8]}.json"
    with results_file.open("w") as output:
        proc = subprocess.Popen(command, env={**full_env, **(env or {})}, start_new_session=True, stdout=output, stderr=subprocess.DEVNULL)
    return Background(proc, results_file, time.monotonic(), module_process=True)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 120, step: float = 0.005) -> bool:
    """Poll ``condition`` until it holds (True), the process ended or the time is up (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return condition()
        time.sleep(step)
    return False


def files_below(directory: Path) -> list[Path]:
    """Regular files under ``directory`` (none when it does not exist)."""
    return [p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()] if directory.is_dir() else []


def bundle_scratch(dest: Path) -> list[Path]:
    """What a cache_bundle run writes before its swap: a new directory beside ``dest`` (``.<name>.*.tmp``), or temp
    files and directories inside it where ``dest`` cannot be swapped."""
    beside = [p for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.") and p.name.endswith(".tmp")]
    return beside + ([p for p in dest.iterdir() if p.name.endswith(".tmp")] if dest.is_dir() else [])


def bytes_below(directory: Path) -> int:
    total = 0
    for path in files_below(directory):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # moved on while we looked
            pass
    return total


def tree_digest(root: Path, skip_locks: bool = True) -> dict[str, str]:
    """Every entry under ``root``: type, mode, owner, and content hash (files, with mtime) or target (links).

    Lock files (empty, for flock) under .modelseed/locks are left out: taking a model's lock creates one.
    """
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if skip_locks and rel.startswith(".modelseed/locks"):
            continue
        st = path.lstat()
        head = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"
        if stat.S_ISLNK(st.st_mode):
            out[rel] = f"{head} -> {os.readlink(path)}"
        elif stat.S_ISREG(st.st_mode):
            out[rel] = f"{head} {st.st_mtime_ns} {hashlib.sha256(path.read_bytes()).hexdigest()}"
        else:
            out[rel] = head
    return out


def content_digest(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` (not followed) with its content hash or target: what a reader sees."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
