"""The accounts an inventory may log in as: root, or a non-root operator account with passwordless sudo.

Every node gets the operator account in its private /etc (passwd, group, shadow, gshadow and a sudoers.d
drop-in) and a home in its private /home holding the fleet's key in ~/.ssh/authorized_keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import FleetError

ROOT = "root"
OPERATOR = "deploy"
USERS = (ROOT, OPERATOR)
FIRST_UID = 1000  # the first id a distribution gives to people, as `adduser` would


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str  # inside the node


def add_operator(etc: Path) -> Account:
    """Append the operator account to the node's /etc copy, with the first user and group id both files leave free."""
    taken_uids = _ids(etc / "passwd")
    taken_gids = _ids(etc / "group")
    number = next(n for n in range(FIRST_UID, 60000) if n not in taken_uids and n not in taken_gids)
    account = Account(OPERATOR, number, number, f"/home/{OPERATOR}")
    _append(etc / "passwd", f"{OPERATOR}:x:{number}:{number}::{account.home}:/bin/bash")
    _append(etc / "group", f"{OPERATOR}:x:{number}:")
    # '*': no password at all, yet not a locked account, which sshd would refuse even for a key.
    _append(etc / "shadow", f"{OPERATOR}:*:19000:0:99999:7:::")
    _append(etc / "gshadow", f"{OPERATOR}:!::")
    sudoers = etc / "sudoers.d"
    sudoers.mkdir(mode=0o755, exist_ok=True)
    dropin = sudoers / OPERATOR
    dropin.write_text(f"{OPERATOR} ALL=(ALL:ALL) NOPASSWD: ALL\n", encoding="ascii")
    dropin.chmod(0o440)  # sudo ignores a drop-in that others may write
    return account


def account(node_root: Path, name: str) -> Account:
    """``name``'s entry in the node's passwd copy."""
    for line in (node_root / "etc" / "passwd").read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == name:
            return Account(name, int(fields[2]), int(fields[3]), fields[5])
    raise FleetError(f"{node_root.name} has no account {name!r}")


def home(node_root: Path, user: Account) -> Path:
    """The user's home seen from outside the node."""
    return node_root / user.home.lstrip("/")


def write_ssh_file(node_root: Path, user: Account, name: str, data: bytes) -> None:
    """``~/.ssh/NAME`` of the user, owned by the user and private, in the modes sshd's StrictModes accepts."""
    ssh_dir = home(node_root, user) / ".ssh"
    for directory, mode in ((ssh_dir.parent, 0o755), (ssh_dir, 0o700)):
        directory.mkdir(mode=mode, exist_ok=True)
        os.chown(directory, user.uid, user.gid)
    target = ssh_dir / name
    target.write_bytes(data)
    target.chmod(0o600)
    os.chown(target, user.uid, user.gid)


def _ids(path: Path) -> set[int]:
    return {int(line.split(":")[2]) for line in path.read_text(encoding="utf-8").splitlines() if line.count(":") >= 2}


def _append(path: Path, line: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line + "\n", encoding="utf-8")
