"""Machine-wide bookkeeping for fleets that run at the same time (pytest-xdist workers, molecule, several checkouts)."""

from __future__ import annotations

import fcntl
import socket
from contextlib import contextmanager
from pathlib import Path

from .errors import FleetError

REGISTRY = Path("/run/modelseed-fleet")
# Loopback fleets use 127.0.K.0/24, 127.0.10.0/24 when it is free; all of 127.0.0.0/8 is loopback on Linux.
LOOPBACK_BLOCKS = range(10, 251)


@contextmanager
def locked():
    """Serialise claims and namespace set-up between fleets."""
    REGISTRY.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(REGISTRY / "lock", "a", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def claim_loopback_block(owner: Path, count: int) -> str:
    """Reserve a block whose addresses .1 to .count are free on port 22; return its prefix, e.g. ``127.0.10``."""
    with locked():
        for k in LOOPBACK_BLOCKS:
            prefix = f"127.0.{k}"
            claim = REGISTRY / prefix
            if _held(claim) or not all(_bindable(f"{prefix}.{i}") for i in range(1, count + 1)):
                continue
            claim.write_text(str(owner), encoding="utf-8")
            return prefix
    raise FleetError(f"no loopback block 127.0.{LOOPBACK_BLOCKS[0]}-{LOOPBACK_BLOCKS[-1]}.0/24 has {count} free ssh addresses")


def release_loopback_block(prefix: str, owner: Path) -> None:
    with locked():
        claim = REGISTRY / prefix
        if _owner(claim) == str(owner):
            claim.unlink()


def _owner(claim: Path) -> str | None:
    try:
        return claim.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _held(claim: Path) -> bool:
    """A claim holds while its owner's state dir exists: a fleet that crashed and was cleaned away frees its block."""
    owner = _owner(claim)
    return owner is not None and Path(owner).is_dir()


def _bindable(address: str) -> bool:
    # SO_REUSEADDR as sshd sets it: connections in TIME_WAIT from an earlier fleet do not block the address.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, 22))
        except OSError:
            return False
    return True
