"""Run a node's sshd in a bubblewrap sandbox, detached, and stop it again by pid.

bwrap builds the node (namespaces, mounts) and keeps it alive with a placeholder process; sshd joins that
sandbox from outside with nsenter. Everything bwrap starts carries no_new_privs, under which no setuid
program elevates: sshd started by bwrap would leave ``sudo`` powerless for a non-root login. Joined from
outside, sshd and its sessions run without it, and the one setuid-capable mount is ``/usr/bin/sudo``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import FleetError
from .netns import command_prefix
from .nodes import PRIVATE_DIRS, Node

SSHD = "/usr/sbin/sshd"  # sshd refuses to start unless run by absolute path
SUDO = "/usr/bin/sudo"
# The namespaces bwrap makes for a node, plus its network namespace (the host's, in loopback mode).
JOINED = ("--mount", "--uts", "--ipc", "--pid", "--net")
# Paths a node gets its own copy of: a state dir below one of them is hidden from nodes already.
REPLACED = ("/dev", "/proc", "/run", "/etc", *(f"/{name}" for name in PRIVATE_DIRS))
# sshd builds session environments itself; nothing of the caller's (tokens included) needs to reach it.
SANDBOX_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def bwrap_command(node: Node, state_dir: Path, info_fd: int, shared: tuple[Path, ...] = ()) -> list[str]:
    """``shared``: host directories every node sees read-only at the same path, even inside its private dirs.
    The sandbox writes one byte to its stdout once its mounts are in place, then only holds the namespaces."""
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
            "--info-fd", str(info_fd), "/bin/sh", "-c", "printf . && exec sleep infinity"]
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


@dataclass
class Launch:
    """A sandbox on its way up: bwrap, and the pipe its placeholder process reports ready on (its stdout)."""

    proc: subprocess.Popen
    ready: int  # read end

    def close(self) -> None:
        if self.ready >= 0:
            os.close(self.ready)
            self.ready = -1


def start(node: Node, state_dir: Path, shared: tuple[Path, ...] = ()) -> Launch:
    """Launch the sandbox in a session of its own (no --die-with-parent: nodes outlive the command that starts them)."""
    info_fd = os.open(node.info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    ready_read, ready_write = os.pipe()
    try:
        with open(node.log, "ab") as log:
            proc = subprocess.Popen(  # pylint: disable=consider-using-with  # runs until down()
                bwrap_command(node, state_dir, info_fd, shared), stdin=subprocess.DEVNULL, stdout=ready_write, stderr=log,
                pass_fds=(info_fd,), start_new_session=True, env=SANDBOX_ENV)
    except BaseException:
        os.close(ready_read)
        raise
    finally:
        os.close(info_fd)
        os.close(ready_write)
    node.launcher_pid, node.launcher_starttime = proc.pid, starttime(proc.pid)
    return Launch(proc, ready_read)


def wait_ready(node: Node, launch: Launch, timeout: float) -> None:
    """Wait until the sandbox's mounts are in place, and record its pid 1 from bwrap's info JSON: killing that pid
    is what stops the node."""
    deadline = time.monotonic() + timeout
    try:
        readable, _w, _x = select.select([launch.ready], [], [], timeout)
        # Nothing to read by the deadline, or end of file: every writer is gone, bwrap failed.
        if not readable or not os.read(launch.ready, 1):
            raise FleetError(f"{node.name}: bwrap did not set up the sandbox (exit {launch.proc.poll()}):\n{read_log(node)}")
    finally:
        launch.close()
    while True:
        try:
            node.pid = json.loads(node.info.read_text(encoding="utf-8"))["child-pid"]
            node.starttime = starttime(node.pid)
            return
        except (ValueError, KeyError, OSError):
            pass  # not written yet, or half written
        if launch.proc.poll() is not None or time.monotonic() > deadline:
            raise FleetError(f"{node.name}: bwrap wrote no sandbox pid (exit {launch.proc.returncode}):\n{read_log(node)}")
        time.sleep(0.005)


def start_sshd(node: Node) -> subprocess.Popen:
    """Let ``sudo`` elevate inside the node, then start sshd there. Returns nsenter, which lives as long as sshd."""
    enter = ["nsenter", f"--target={node.pid}", "--mount", "--root", "--wd"]
    if os.path.exists(SUDO):
        # A bind mount of the file alone, still read-only; bwrap mounts everything else nosuid.
        for mount in (["mount", "--bind", SUDO, SUDO], ["mount", "-o", "remount,bind,ro,nodev,suid", SUDO]):
            proc = subprocess.run([*enter, *mount], capture_output=True, text=True, check=False, env=SANDBOX_ENV)
            if proc.returncode:
                raise FleetError(f"{node.name}: {' '.join(mount)} failed: {proc.stderr.strip()}")
    with open(node.log, "ab") as log:
        sshd = subprocess.Popen(  # pylint: disable=consider-using-with  # runs until down()
            ["nsenter", f"--target={node.pid}", *JOINED, "--root", "--wd", SSHD, "-D", "-e"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=SANDBOX_ENV)
    node.sshd_launcher_pid, node.sshd_launcher_starttime = sshd.pid, starttime(sshd.pid)
    return sshd


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
    # The launchers (bwrap, and nsenter of sshd) exit right after their sandbox. Reap them when they are ours;
    # otherwise init does.
    for pid, started in ((node.launcher_pid, node.launcher_starttime), (node.sshd_launcher_pid, node.sshd_launcher_starttime)):
        if pid:
            _wait_gone(node, pid, started, timeout)
            _reap(pid)


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
