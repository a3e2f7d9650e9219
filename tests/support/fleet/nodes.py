"""One node's host-side tree: a private /etc with its own sshd and host key, and empty private dirs."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import login
from .keys import keygen

# Directories a node writes to, each bound from the node's host-side tree. /etc is a copy of the host's.
PRIVATE_DIRS = ("var/cache", "var/log", "var/tmp", "opt", "root", "home", "srv", "tmp")
WORLD_WRITABLE = ("tmp", "var/tmp")

SSHD_CONFIG = """\
# Written by the fleet harness; the host's sshd_config.d is deliberately not included.
ListenAddress {address}:22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
# PAM's pam_env applies /etc/environment to every new session, as on a real host.
UsePAM yes
UseDNS no
PrintMotd no
# Ansible opens many connections at once.
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp /usr/lib/openssh/sftp-server
"""


@dataclass
class Node:
    """A node as the fleet records it in its state file."""

    index: int
    name: str
    address: str
    root: str
    netns: str | None = None
    pid: int | None = None          # the sandbox's pid 1, from bwrap's --info-fd
    starttime: int | None = None    # with pid, tells our process from a later one reusing the number
    launcher_pid: int | None = None  # the outer bwrap, which exits once the sandbox is gone
    launcher_starttime: int | None = None
    sshd_launcher_pid: int | None = None  # nsenter, outside the node, whose child inside it is sshd
    sshd_launcher_starttime: int | None = None
    host_key: str = field(default="", repr=False)

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def log(self) -> Path:
        return self.path.parent / f"{self.name}.sshd.log"

    @property
    def info(self) -> Path:
        return self.path.parent / f"{self.name}.info.json"

    def to_dict(self) -> dict:
        return asdict(self)


def prepare(node: Node, authorized_key: str) -> None:
    """Build the node's tree: a copy of /etc without the host's keys, a fresh host key, and the controller's key
    for root and for the operator account (``login.OPERATOR``, passwordless sudo)."""
    root = node.path
    root.mkdir(parents=True)
    # rsync rather than cp: the host's private host keys never get copied, not even briefly.
    subprocess.run(["rsync", "-a", "--exclude=/ssh/ssh_host_*", "--exclude=/ssh/sshd_config.d/*", "/etc/", f"{root}/etc/"],
                   check=True, capture_output=True)
    for name in PRIVATE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in WORLD_WRITABLE:
        (root / name).chmod(0o1777)
    etc = root / "etc"
    node.host_key = keygen(etc / "ssh" / "ssh_host_ed25519_key", f"root@{node.name}")
    (etc / "ssh" / "sshd_config").write_text(SSHD_CONFIG.format(address=node.address), encoding="ascii")
    (etc / "hostname").write_text(f"{node.name}\n", encoding="ascii")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{node.address}\t{node.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                               encoding="ascii")
    # Facts and tools that tell hosts apart by machine id must see different machines.
    (etc / "machine-id").write_text(secrets.token_hex(16) + "\n", encoding="ascii")
    root.joinpath("root").chmod(0o700)
    operator = login.add_operator(etc)
    for user in (login.account(root, login.ROOT), operator):
        login.write_ssh_file(root, user, "authorized_keys", (authorized_key + "\n").encode("ascii"))
