"""Run a node's sshd in a bubblewrap sandbox, detached, and stop it again by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .errors import FleetError
from .netns import command_prefix
from .nodes import PRIVATE_DIRS, Node

SSHD = "/usr/sbin/sshd"  # sshd refuses to start unless run by absolute path
# Paths a node gets its own copy of: a state dir below one of them is hidden from nodes already.
REPLACED = ("/dev", "/proc", "/run", "/etc", *(f"/{name}" for name in PRIVATE_DIRS))
# sshd builds session environments itself; nothing of the caller's (tokens included) needs to reach it.
SANDBOX_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def bwrap_command(node: Node, state_dir: Path, info_fd: int, shared: tuple[Path, ...] = ()) -> list[str]:
    """``shared``: host directories every node sees read-only at the same path, even inside its private dirs."""
    root = node.path
    cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/run", "--dir", "/run/sshd",
           "--bind", str(root / "etc"), "/etc"]
    for name in PRIVATE_DIRS:
        cmd += ["--bind", str(root / name), f"/{name}"]
    if not any(_is_within(state_dir, Path(top)) for top in REPLACED):
        cmd += ["--tmpfs", str(state_dir)]  # other nodes' trees and the controller's private key
    for path in shared:
        cmd += [*_traversable_parents(path), "--ro-bind", str(path), str(path)]
    cmd += ["--unshare-pid", "--unshare-uts", "--unshare-ipc", "--hostname", node.name,
            "--info-fd", str(info_fd), SSHD, "-D", "-e"]
    if node.netns:
        cmd = [*command_prefix(node.netns), *cmd]
    return cmd


def _traversable_parents(path: Path) -> list[str]:
    """bwrap makes missing mount points 0700: inside a node's private dirs, make them 0755 first, so that
    a runtime user can reach a shared directory below /tmp or /root as well."""
    top = next((Path(t) for t in REPLACED if _is_within(path, Path(t))), None)
    if top is None:
        return []
    args: list[str] = []
    for parent in reversed(path.parents):
        if _is_within(parent, top) and parent != top:
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


def start(node: Node, state_dir: Path, shared: tuple[Path, ...] = ()) -> subprocess.Popen:
    """Launch the node in a session of its own (no --die-with-parent: nodes outlive the command that starts them)."""
    info_fd = os.open(node.info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(node.log, "wb") as log:
            proc = subprocess.Popen(  # pylint: disable=consider-using-with  # runs until down()
                bwrap_command(node, state_dir, info_fd, shared), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(info_fd,), start_new_session=True, env=SANDBOX_ENV)
    finally:
        os.close(info_fd)
    node.launcher_pid, node.launcher_starttime = proc.pid, starttime(proc.pid)
    return proc


def wait_child_pid(node: Node, proc: subprocess.Popen, timeout: float) -> None:
    """Record the sandbox's pid 1 from bwrap's info JSON: killing it is what stops the node."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            node.pid = json.loads(node.info.read_text(encoding="utf-8"))["child-pid"]
            node.starttime = starttime(node.pid)
            return
        except (ValueError, KeyError, OSError):
            pass  # not written yet, or half written
        if proc.poll() is not None or time.monotonic() > deadline:
            raise FleetError(f"{node.name}: bwrap did not start the sandbox (exit {proc.returncode}):\n{read_log(node)}")
        time.sleep(0.005)


def _stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/PID/stat (after the command name, which may hold spaces)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def starttime(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def running(pid: int | None, started: int | None) -> bool:
    """Whether that very process still runs: zombies have exited already, and a reused pid is someone else."""
    if not pid:
        return False
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z" and (started is None or int(fields[19]) == started)


def stop(node: Node, timeout: float = 10.0) -> None:
    """SIGKILL the sandbox's pid 1 (which takes every process of the node with it); wait until it is gone."""
    if running(node.pid, node.starttime):
        try:
            os.kill(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_gone(node, node.pid, node.starttime, timeout)
    # The launcher exits right after its sandbox. Reap it when it is ours; otherwise init does.
    if node.launcher_pid:
        _wait_gone(node, node.launcher_pid, node.launcher_starttime, timeout)
        _reap(node.launcher_pid)


def _wait_gone(node: Node, pid: int | None, started: int | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while running(pid, started):
        if time.monotonic() > deadline:
            raise FleetError(f"{node.name}: process {pid} still runs {timeout:.0f} s after SIGKILL")
        time.sleep(0.005)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def read_log(node: Node, limit: int = 4000) -> str:
    try:
        text = node.log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no sshd log)"
    return text[-limit:] or "(sshd log is empty)"


def _is_within(path: Path, top: Path) -> bool:
    return path == top or top in path.parents
