"""A fleet of sshd nodes on this machine: bring it up, describe it as an inventory, take it down again."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import inventory, login, netns, registry, sandbox
from .errors import FleetError
from .keys import keygen, known_hosts_line
from .nodes import Node, prepare

STATE_FILE = "fleet.json"
RELAY = Path(__file__).with_name("relay.py")
DEFAULT_GROUPS: dict[str, list[int] | None] = {"fleet": None}
# ssh appends 17 characters to a ControlPath while creating it, and %C is 40; a socket path holds at most 107.
MAX_CONTROL_DIR = 48


def new_state_dir(prefix: str = "fleet-") -> Path:
    """A fresh empty state dir, on tmpfs when /dev/shm is one: nodes then come up several times faster than on disk."""
    shm = Path("/dev/shm")
    base = shm if os.path.ismount(shm) and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


class Fleet:
    """``size`` nodes, each a bubblewrap sandbox with its own sshd, /etc and private dirs; usable as a context manager.

    ``groups`` maps a group name to node numbers (1-based), or to ``None`` for every node. ``hostvars`` are added to
    every host. With ``airgap`` each node gets a network namespace of its own (see ``netns``) and Ansible must run
    through ``command_prefix``, or, with ``proxy``, anywhere: the inventory's ssh arguments then hold a ProxyCommand
    that enters the controller namespace (rsync pushes from the controller use them too).

    ``user``: whom the inventory logs in as, ``root`` or ``login.OPERATOR`` (``deploy``), a non-root account that
    every node has, which becomes root with the node's real ``sudo`` (the inventory sets ``ansible_become``).
    """

    def __init__(self, state_dir: str | Path, size: int = 3, *, airgap: bool = False,
                 groups: dict[str, list[int] | None] | None = None, hostvars: dict | None = None,
                 subnet: str = netns.DEFAULT_SUBNET, ready_timeout: float = 20.0, shared: list[str | Path] = (),
                 proxy: bool = False, user: str = login.ROOT, netns_prefix: str = netns.DEFAULT_PREFIX):
        if not 1 <= size <= 250:
            raise FleetError(f"a fleet has 1 to 250 nodes, not {size}")
        if user not in login.USERS:
            raise FleetError(f"a fleet logs in as one of {', '.join(login.USERS)}, not {user!r}")
        self.state_dir = Path(state_dir).absolute()
        self.size = size
        self.airgap = airgap
        self.groups = dict(DEFAULT_GROUPS if groups is None else groups)
        self.hostvars = dict(hostvars or {})
        self.subnet = subnet
        self.ready_timeout = ready_timeout
        # Host directories the nodes see read-only at the same path (SDK virtualenvs, say), wherever they live.
        self.shared = tuple(Path(p).absolute() for p in shared)
        self.proxy = proxy and airgap
        self.user = user
        self.netns_prefix = netns_prefix
        self.run_id = ""
        self.loopback_block: str | None = None
        self.control_dir: Path | None = None
        self.nodes: list[Node] = []
        self._launchers: list[subprocess.Popen] = []

    # Files in the state dir.
    @property
    def key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / "inventory.yml"

    @property
    def instances_path(self) -> Path:
        return self.state_dir / "instance_config.yml"

    @property
    def gap(self) -> netns.AirGap | None:
        return netns.AirGap(self.run_id, self.size, self.subnet, self.netns_prefix) if self.airgap and self.run_id else None

    @property
    def command_prefix(self) -> list[str]:
        """Put this before ``ansible``/``ansible-playbook`` (and anything else that must reach the nodes)."""
        return netns.command_prefix(self.gap.controller) if self.gap else []

    @property
    def proxy_command(self) -> str | None:
        """An ssh ProxyCommand that reaches the nodes from outside the controller namespace (air-gap mode)."""
        return shlex.join([*self.command_prefix, sys.executable, str(RELAY), "%h", "%p"]) if self.gap else None

    @property
    def controller_address(self) -> str:
        """Where nodes reach the controller: the bridge in air-gap mode, the host's loopback otherwise."""
        return self.gap.controller_address if self.gap else "127.0.0.1"

    def call_in_controller(self, function, *args):
        """Run ``function(*args)`` where Ansible runs (e.g. to open a listening socket nodes may reach)."""
        return netns.call_in(self.gap.controller, function, *args) if self.gap else function(*args)

    def node(self, which: int | str) -> Node:
        return next(node for node in self.nodes if which in (node.index, node.name))

    @property
    def inventory(self) -> dict:
        common = inventory.ssh_common_args(self.known_hosts, self.control_dir, self.proxy_command if self.proxy else None)
        per_host = {node.name: inventory.host_vars(node, key=self.key, common_args=common, user=self.user,
                                                   controller_address=self.controller_address) for node in self.nodes}
        return inventory.build(self.nodes, self.groups, per_host, self.hostvars)

    def __enter__(self) -> Fleet:
        return self.up()

    def __exit__(self, *exc_info) -> None:
        self.down()

    def up(self) -> Fleet:
        """Start every node and return once each accepts TCP on port 22; on failure, clean up and raise."""
        stale = Fleet.load(self.state_dir)
        if stale:
            stale.down()  # left by a run that never took it down
        if self.state_dir.is_dir() and any(self.state_dir.iterdir()):
            raise FleetError(f"{self.state_dir} is not empty and holds no fleet: refusing to use it as a state dir")
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run_id = secrets.token_hex(4)
        self._save()  # from here on, down() can find and clean up whatever exists
        try:
            self._allocate()
            self._start()
            self._wait_ready()
            inventory.write(self.inventory_path, self.inventory)
            inventory.write(self.instances_path, inventory.molecule_instances(self.nodes, self.key, self.user))
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop every node and remove its namespaces, claims and the state dir. Safe to repeat."""
        self._close_ssh_masters()
        for node in self.nodes:
            _recover_pid(node)
            sandbox.stop(node)
        for launcher in self._launchers:
            launcher.poll()  # reap our own children
        self._launchers.clear()
        if self.airgap and self.run_id:
            # With any namespace added beside the fleet's own under its name (a site's hub), by whatever process.
            netns.destroy(sorted(set(self.gap.names) | set(netns.existing(self.run_id, self.netns_prefix))))
        if self.loopback_block:
            registry.release_loopback_block(self.loopback_block, self.state_dir)
        if self.control_dir and not self.control_dir.is_relative_to(self.state_dir):
            shutil.rmtree(self.control_dir, ignore_errors=True)
        # Only a directory that holds a fleet's state file is ours to delete.
        if (self.state_dir / STATE_FILE).exists():
            shutil.rmtree(self.state_dir)

    @classmethod
    def load(cls, state_dir: str | Path) -> Fleet | None:
        """The fleet recorded in ``state_dir``, or None when there is none."""
        path = Path(state_dir).absolute() / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        fleet = cls(path.parent, data["size"], airgap=data["airgap"], groups=data["groups"], hostvars=data["hostvars"],
                    subnet=data["subnet"], proxy=data.get("proxy", False), user=data.get("user", login.ROOT),
                    shared=data.get("shared", ()), netns_prefix=data.get("netns_prefix", netns.DEFAULT_PREFIX))
        fleet.run_id = data["run_id"]
        fleet.loopback_block = data["loopback_block"]
        fleet.control_dir = Path(data["control_dir"]) if data["control_dir"] else None
        fleet.nodes = [Node(**node) for node in data["nodes"]]
        return fleet

    def _save(self) -> None:
        data = {"run_id": self.run_id, "size": self.size, "airgap": self.airgap, "groups": self.groups,
                "hostvars": self.hostvars, "subnet": self.subnet, "proxy": self.proxy, "shared": [str(p) for p in self.shared],
                "user": self.user, "netns_prefix": self.netns_prefix, "loopback_block": self.loopback_block,
                "control_dir": str(self.control_dir) if self.control_dir else None,
                "nodes": [node.to_dict() for node in self.nodes]}
        tmp = self.state_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        tmp.replace(self.state_dir / STATE_FILE)

    def _allocate(self) -> None:
        """Addresses (a loopback block, or namespaces) and the per-fleet ssh control socket directory."""
        control_dir = self.state_dir / "cp"
        if len(str(control_dir)) > MAX_CONTROL_DIR:
            control_dir = registry.REGISTRY / f"cp-{self.run_id}"
        self.control_dir = control_dir
        self._save()
        self.control_dir.mkdir(mode=0o700, parents=True)
        if self.airgap:
            netns.create(self.gap)
            addresses = [self.gap.address(i) for i in range(1, self.size + 1)]
        else:
            self.loopback_block = registry.claim_loopback_block(self.state_dir, self.size)
            addresses = [f"{self.loopback_block}.{i}" for i in range(1, self.size + 1)]
        nodes_dir = self.state_dir / "nodes"
        nodes_dir.mkdir()
        self.nodes = [Node(i, f"node{i}", address, str(nodes_dir / f"node{i}"), netns=self.gap.node(i) if self.gap else None)
                      for i, address in enumerate(addresses, 1)]
        self._save()

    def _start(self) -> None:
        if self.user != login.ROOT and not os.path.exists(sandbox.SUDO):
            raise FleetError(f"logging in as {self.user} needs sudo on this machine, which nodes share: make sysdeps")
        public_key = keygen(self.key, f"fleet-controller-{self.run_id}")
        with ThreadPoolExecutor(max_workers=min(8, self.size)) as pool:
            list(pool.map(lambda node: prepare(node, public_key), self.nodes))
        self.known_hosts.write_text("".join(known_hosts_line(node.address, node.host_key) + "\n" for node in self.nodes),
                                    encoding="ascii")
        launches = []
        try:
            for node in self.nodes:
                launches.append(sandbox.start(node, self.state_dir, self.shared))
                self._launchers.append(launches[-1].proc)
            self._save()
            for node, launch in zip(self.nodes, launches, strict=True):
                sandbox.wait_ready(node, launch, timeout=self.ready_timeout)
            self._save()
            for node in self.nodes:
                self._launchers.append(sandbox.start_sshd(node))
            self._save()
        finally:
            for launch in launches:
                launch.close()

    def share_key(self, which: int | str) -> None:
        """Give the login user of node ``which`` the fleet's key and known_hosts in ~/.ssh: from there it reaches
        the other nodes over ssh, as a staging host that pushes the bundle does."""
        node = self.node(which)
        user = login.account(node.path, self.user)
        login.write_ssh_file(node.path, user, "id_ed25519", self.key.read_bytes())
        login.write_ssh_file(node.path, user, "known_hosts", self.known_hosts.read_bytes())

    def kill(self, which: int | str) -> None:
        """SIGKILL the sandbox of node ``which``, every process in it (a node that dies); its tree stays on disk."""
        node = self.node(which)
        sandbox.stop(node)
        self._save()

    def restart(self, which: int | str) -> None:
        """Start node ``which`` again on its tree as it was left (files, host key, address), as a rebooted host."""
        node = self.node(which)
        sandbox.stop(node)
        launch = sandbox.start(node, self.state_dir, self.shared)
        try:
            sandbox.wait_ready(node, launch, timeout=self.ready_timeout)
        finally:
            launch.close()
        sandbox.start_sshd(node)
        self._save()
        self.call_in_controller(_wait_for_ssh, [node], self.ready_timeout)

    def _wait_ready(self) -> None:
        self.call_in_controller(_wait_for_ssh, self.nodes, self.ready_timeout)

    def _close_ssh_masters(self) -> None:
        """Ansible's ssh connection masters would otherwise linger until ControlPersist runs out."""
        if not self.control_dir or not self.control_dir.is_dir():
            return
        for control in self.control_dir.iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={control}", "-O", "exit", "fleet-node"],
                           capture_output=True, timeout=10, check=False)


def down(state_dir: str | Path) -> bool:
    """Take down the fleet recorded in ``state_dir``; False when there was none. An empty dir is removed too."""
    fleet = Fleet.load(state_dir)
    if fleet:
        fleet.down()
        return True
    path = Path(state_dir)
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    return False


def _recover_pid(node: Node) -> None:
    """A node whose pid was never recorded (up was interrupted) can still be found through bwrap's info file."""
    if node.pid is not None:
        return
    try:
        pid = json.loads(node.info.read_text(encoding="utf-8"))["child-pid"]
        # The sandbox's pid 1 is a fork of bwrap and keeps its command line; anything else reuses the number.
        if node.root.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            node.pid, node.starttime = pid, sandbox.starttime(pid)
    except (OSError, ValueError, KeyError):
        pass


def _wait_for_ssh(nodes: list[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            if not (sandbox.running(node.pid, node.starttime)
                    and sandbox.running(node.sshd_launcher_pid, node.sshd_launcher_starttime)):
                raise FleetError(f"{node.name}: sshd exited before listening on {node.address}:22:\n{sandbox.read_log(node)}")
            try:
                with socket.create_connection((node.address, 22), timeout=0.5):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise FleetError(f"{node.name}: nothing accepts connections on {node.address}:22 after {timeout:.0f} s:\n"
                                 f"{sandbox.read_log(node)}")
            time.sleep(0.01)
