"""SSH keys for a fleet: the controller's key pair, each node's host key, and the known_hosts file."""

from __future__ import annotations

import subprocess
from pathlib import Path


def keygen(path: Path, comment: str) -> str:
    """Write a fresh passphrase-less ed25519 key pair at ``path``; return the public key line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return Path(f"{path}.pub").read_text(encoding="ascii").strip()


def known_hosts_line(address: str, public_key: str) -> str:
    """The known_hosts entry for a host key served on port 22 (no comment: it would name this machine)."""
    key_type, blob = public_key.split()[:2]
    return f"{address} {key_type} {blob}"
