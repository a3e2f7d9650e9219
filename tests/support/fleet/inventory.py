"""The Ansible inventory of a fleet, and molecule's instance list for the same hosts."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from .errors import FleetError
from .login import ROOT
from .nodes import Node


def ssh_common_args(known_hosts: Path, control_dir: Path, proxy_command: str | None = None) -> str:
    options = {
        "UserKnownHostsFile": known_hosts,
        "GlobalKnownHostsFile": "/dev/null",
        "StrictHostKeyChecking": "yes",
        "IdentitiesOnly": "yes",
        # Per fleet: another fleet may use the same addresses (air-gap mode always does) at the same time.
        "ControlPath": control_dir / "%C",
    }
    if proxy_command:
        options["ProxyCommand"] = proxy_command
    return " ".join(f"-o {shlex.quote(f'{key}={value}')}" for key, value in options.items())


def host_vars(node: Node, *, key: Path, common_args: str, controller_address: str, user: str = ROOT) -> dict:
    """``user``: the login; any other than root becomes root with the node's sudo."""
    return {
        "ansible_host": node.address,
        "ansible_port": 22,
        "ansible_user": user,
        **({} if user == ROOT else {"ansible_become": True}),
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": common_args,
        "ansible_pipelining": True,
        # Nodes hide the host's /root, and with it any Python installed there.
        "ansible_python_interpreter": "/usr/bin/python3",
        "fleet_node_root": node.root,
        "fleet_controller_address": controller_address,
    }


def build(nodes: list[Node], groups: dict[str, list[int] | None], per_host: dict[str, dict], extra: dict) -> dict:
    """Hosts with their variables under ``all``; groups list them by name (``None`` means every node)."""
    by_index = {node.index: node.name for node in nodes}
    children = {}
    for group, members in groups.items():
        indexes = sorted(by_index) if members is None else list(members)
        unknown = [i for i in indexes if i not in by_index]
        if unknown:
            raise FleetError(f"group {group} names nodes {unknown}, but the fleet has nodes 1-{len(nodes)}")
        children[group] = {"hosts": {by_index[i]: None for i in indexes}}
    hosts = {node.name: {**per_host[node.name], **extra} for node in nodes}
    return {"all": {"hosts": hosts, "children": children}}


def molecule_instances(nodes: list[Node], key: Path, user: str = ROOT) -> list[dict]:
    """The instance config a molecule ``create`` playbook hands back for the delegated driver."""
    return [{"instance": node.name, "address": node.address, "user": user, "port": 22, "identity_file": str(key)}
            for node in nodes]


def write(path: Path, data) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), encoding="utf-8")
