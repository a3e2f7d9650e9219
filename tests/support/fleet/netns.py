"""Air-gap mode: each node in a network namespace of its own, wired to a bridge in a separate controller namespace.

Addresses exist only inside these namespaces and there is no route out of them, so nodes reach each other and the
controller namespace, and nothing else: not the host's loopback, not the host's network. Nothing is added to the
host's own network namespace.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import FleetError
from .registry import REGISTRY, locked

NETNS_DIR = Path("/run/netns")
# `ip netns add` turns /run/netns into a mount point; this marker says a fleet did it, so the last fleet undoes it.
MOUNT_MARKER = REGISTRY / "netns-mount"
CLONE_NEWNET = 0x40000000
DEFAULT_SUBNET = "10.213.0"
DEFAULT_PREFIX = "modelseed"


@dataclass
class AirGap:
    run_id: str
    size: int
    subnet: str = DEFAULT_SUBNET  # a /24, written as its first three octets
    prefix: str = DEFAULT_PREFIX  # of every namespace name, so that a user's own namespaces are told apart

    @property
    def controller(self) -> str:
        return f"{self.prefix}-{self.run_id}-ctl"

    @property
    def controller_address(self) -> str:
        return f"{self.subnet}.254"

    def node(self, index: int) -> str:
        return f"{self.prefix}-{self.run_id}-node{index}"

    def address(self, index: int) -> str:
        return f"{self.subnet}.{index}"

    @property
    def names(self) -> list[str]:
        return [self.controller, *(self.node(i) for i in range(1, self.size + 1))]


def command_prefix(namespace: str) -> list[str]:
    """Prefix for a command that must run inside ``namespace`` (ansible, in the controller namespace)."""
    return ["nsenter", f"--net={NETNS_DIR / namespace}"]


def create(gap: AirGap) -> None:
    if not 1 <= gap.size <= 253:
        raise FleetError(f"air-gap mode takes 1 to 253 nodes, not {gap.size}")
    with locked():
        if not _is_mountpoint(NETNS_DIR):
            MOUNT_MARKER.write_text("", encoding="ascii")
        for name in gap.names:
            _ip("netns", "add", name)
        bridge = ["link set lo up", "link add br0 type bridge", f"addr add {gap.controller_address}/24 dev br0", "link set br0 up"]
        for i in range(1, gap.size + 1):
            bridge += [f"link add v{i} type veth peer name eth0 netns {gap.node(i)}", f"link set v{i} master br0", f"link set v{i} up"]
        _batch(gap.controller, bridge)
        for i in range(1, gap.size + 1):
            _batch(gap.node(i), ["link set lo up", f"addr add {gap.address(i)}/24 dev eth0", "link set eth0 up"])


def destroy(names: list[str]) -> None:
    """Delete the namespaces (their veths and bridge go with them); idempotent."""
    with locked():
        for name in names:
            if (NETNS_DIR / name).exists():
                _ip("netns", "delete", name)
        if MOUNT_MARKER.exists() and NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()):
            while _is_mountpoint(NETNS_DIR):
                subprocess.run(["umount", str(NETNS_DIR)], check=True, capture_output=True)
            NETNS_DIR.rmdir()
            MOUNT_MARKER.unlink()


def add(name: str) -> None:
    """One more namespace (beside a fleet's, say); ``destroy([name])`` removes it."""
    with locked():
        if not _is_mountpoint(NETNS_DIR):
            MOUNT_MARKER.write_text("", encoding="ascii")
        _ip("netns", "add", name)


def run(namespace: str, commands: list[str]) -> None:
    """``ip -batch`` lines inside ``namespace``."""
    _batch(namespace, commands)


def limit_rate(namespace: str, device: str, rate: int) -> None:
    """A token bucket on what ``device`` sends: ``rate`` bytes per second at most (shape both ends of a veth
    for both directions). The bucket holds 10 ms of data, at least 256 KiB: one GSO packet of a veth is 64 KiB."""
    burst = max(256 << 10, rate // 100)
    proc = subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "replace", "dev", device, "root", "tbf",
                           "rate", f"{rate * 8}bit", "burst", str(burst), "latency", "50ms"],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise FleetError(f"tc tbf on {device} in {namespace} failed: {proc.stderr.strip()}")


def existing(run_id: str, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The namespaces named after a fleet's ``run_id``, its own and any added beside them."""
    prefix = f"{prefix}-{run_id}-"
    return sorted(entry.name for entry in NETNS_DIR.iterdir() if entry.name.startswith(prefix)) if NETNS_DIR.is_dir() else []


def call_in(namespace: str, function, *args):
    """Run ``function(*args)`` on a thread that has joined ``namespace``; sockets it makes stay in that namespace."""
    outcome: dict = {}

    def target():
        try:
            _setns(NETNS_DIR / namespace)
            outcome["value"] = function(*args)
        except BaseException as exc:  # pylint: disable=broad-exception-caught  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _is_mountpoint(path: Path) -> bool:
    """From mountinfo: os.path.ismount misses a directory bind-mounted onto itself, which is what ip netns makes."""
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        return any(line.split()[4] == str(path) for line in mounts)


def _setns(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise FleetError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


def _batch(namespace: str, commands: list[str]) -> None:
    proc = subprocess.run(["ip", "-n", namespace, "-batch", "-"], input="\n".join(commands) + "\n",
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise FleetError(f"network set-up in {namespace} failed: {proc.stderr.strip()}")
