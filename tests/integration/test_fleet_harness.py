"""The test fleet itself: real sshd nodes with separate file systems, reached by real Ansible, and its air-gap mode."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from support.fleet import Fleet, login, netns, new_state_dir, registry, sandbox
from support.playbook import ANSIBLE_PLAYBOOK, REPO, ansible_env

ANSIBLE = str(Path(sys.executable).with_name("ansible"))
ANSIBLE_INVENTORY = str(Path(sys.executable).with_name("ansible-inventory"))

# Run on a node: try a TCP connection to each HOST:PORT argument and report how it went.
PROBE = """\
import json, socket, sys
outcome = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        outcome[target] = "connected"
    except OSError as exc:
        outcome[target] = type(exc).__name__
print(json.dumps(outcome))
"""

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap") or not os.path.exists(sandbox.SSHD),
                       reason="the fleet needs root, bubblewrap and openssh-server"),
]


@pytest.fixture(scope="module")
def fleet():
    with Fleet(new_state_dir("harness-"), 3, groups={"modelscope_staging": [1], "modelscope_nodes": [2, 3]}) as running:
        yield running
    assert leftovers(running) == []


def adhoc(fleet_: Fleet, tmp_path: Path, pattern: str, module: str, args: str = "", extra: tuple[str, ...] = ()) -> dict[str, dict]:
    """Run one module through ``ansible`` (``extra``: more of its options) and return each host's result."""
    tree = tmp_path / f"tree-{uuid.uuid4().hex[:8]}"
    cmd = [*fleet_.command_prefix, ANSIBLE, pattern, "-i", str(fleet_.inventory_path), "-m", module, "-t", str(tree), *extra]
    if args:
        cmd += ["-a", args]
    proc = subprocess.run(cmd, env=ansible_env(), capture_output=True, text=True, timeout=120, check=False)
    results = {path.name: json.loads(path.read_text()) for path in tree.iterdir()} if tree.is_dir() else {}
    assert results, f"ansible {module} gave no results ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return results


def playbook(fleet_: Fleet, tmp_path: Path, plays: list[dict]) -> subprocess.CompletedProcess:
    path = tmp_path / f"play-{uuid.uuid4().hex[:8]}.yml"
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return subprocess.run([*fleet_.command_prefix, ANSIBLE_PLAYBOOK, "-i", str(fleet_.inventory_path), str(path)],
                          env=ansible_env(), capture_output=True, text=True, timeout=300, check=False)


def probe_from(fleet_: Fleet, tmp_path: Path, node: str, *targets: str) -> dict[str, str]:
    # A node's /tmp is a directory on this side: the script goes straight there.
    (fleet_.node(node).path / "tmp" / "probe.py").write_text(PROBE)
    result = adhoc(fleet_, tmp_path, node, "ansible.builtin.command", "/usr/bin/python3 /tmp/probe.py " + " ".join(targets))[node]
    assert result.get("rc") == 0, result
    return json.loads(result["stdout"])


def leftovers(fleet_: Fleet) -> list[str]:
    """Live processes and mounts that still belong to the fleet after down()."""
    found = [f"pid {node.pid}" for node in fleet_.nodes if sandbox.running(node.pid, node.starttime)]
    marker = str(fleet_.state_dir).encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes() and sandbox.running(int(entry.name), None):
                found.append(f"pid {entry.name}: {(entry / 'cmdline').read_bytes()!r}")
        except OSError:
            pass  # exited while we looked
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [line for line in mounts.splitlines() if str(fleet_.state_dir) in line or f"modelseed-{fleet_.run_id}-" in line]
    found += [f"namespace {name}" for name in netns.existing(fleet_.run_id)]
    if fleet_.state_dir.exists():
        found.append(f"state dir {fleet_.state_dir}")
    if fleet_.loopback_block and (registry.REGISTRY / fleet_.loopback_block).exists():
        claim = (registry.REGISTRY / fleet_.loopback_block).read_text()
        found += [f"claim {fleet_.loopback_block}"] if claim == str(fleet_.state_dir) else []
    return found


def test_inventory_has_the_configured_groups(fleet):
    proc = subprocess.run([ANSIBLE_INVENTORY, "-i", str(fleet.inventory_path), "--list"], env=ansible_env(),
                          capture_output=True, text=True, timeout=60, check=True)
    listing = json.loads(proc.stdout)
    assert listing["modelscope_staging"]["hosts"] == ["node1"]
    assert listing["modelscope_nodes"]["hosts"] == ["node2", "node3"]
    node2 = listing["_meta"]["hostvars"]["node2"]
    assert node2["fleet_node_root"] == str(fleet.node(2).path)
    assert "StrictHostKeyChecking=yes" in node2["ansible_ssh_common_args"]


def test_every_node_answers_ping_over_ssh(fleet, tmp_path):
    results = adhoc(fleet, tmp_path, "all", "ansible.builtin.ping")
    assert {host: result.get("ping") for host, result in results.items()} == {"node1": "pong", "node2": "pong", "node3": "pong"}


def test_hostnames_differ(fleet, tmp_path):
    results = adhoc(fleet, tmp_path, "all", "ansible.builtin.command", "hostname")
    assert {host: result["stdout"] for host, result in results.items()} == {"node1": "node1", "node2": "node2", "node3": "node3"}


def test_a_file_written_on_one_node_lands_in_that_node_only(fleet, tmp_path):
    path = f"/var/cache/fleet-harness-{fleet.run_id}"
    result = adhoc(fleet, tmp_path, "node1", "ansible.builtin.copy", f"content=from-node1 dest={path} mode=0644")["node1"]
    assert result.get("changed") is True, result
    assert (fleet.node(1).path / path.lstrip("/")).read_text() == "from-node1"
    for other in (2, 3):
        assert not (fleet.node(other).path / path.lstrip("/")).exists()
    assert not Path(path).exists()
    seen = adhoc(fleet, tmp_path, "all", "ansible.builtin.stat", f"path={path}")
    assert {host: result["stat"]["exists"] for host, result in seen.items()} == {"node1": True, "node2": False, "node3": False}


def test_etc_environment_reaches_new_ssh_sessions(fleet, tmp_path):
    line = f"FLEET_PROBE={fleet.run_id}"
    proc = playbook(fleet, tmp_path, [{
        "hosts": "node2",
        "gather_facts": False,
        "tasks": [
            {"name": "Set a variable for every session", "ansible.builtin.lineinfile": {"path": "/etc/environment", "line": line}},
            {"name": "Start a new ssh session", "ansible.builtin.meta": "reset_connection"},
            {"name": "Read the session's environment", "ansible.builtin.command": "env", "register": "session", "changed_when": False},
            {"name": "PAM has applied /etc/environment", "ansible.builtin.assert": {"that": [f"'{line}' in session.stdout_lines"]}},
        ],
    }])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert line in (fleet.node(2).path / "etc/environment").read_text()
    for other in (1, 3):
        assert line not in (fleet.node(other).path / "etc/environment").read_text()
    assert line not in Path("/etc/environment").read_text()


def test_loopback_nodes_reach_the_host_loopback(fleet, tmp_path):
    """The contrast to the air-gap test: without namespaces nodes share this machine's loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        target = f"127.0.0.1:{listener.getsockname()[1]}"
        assert probe_from(fleet, tmp_path, "node1", target) == {target: "connected"}


def test_nodes_cannot_see_the_state_dir(fleet, tmp_path):
    """The controller's private key and the other nodes' trees stay outside every node."""
    seen = adhoc(fleet, tmp_path, "all", "ansible.builtin.stat", f"path={fleet.key}")
    assert {host: result["stat"]["exists"] for host, result in seen.items()} == {"node1": False, "node2": False, "node3": False}


def test_down_stops_everything_and_can_repeat(tmp_path):
    # A state dir outside the directories nodes get their own copy of: the harness must hide it explicitly.
    small = Fleet(REPO / ".build" / f"fleet-{uuid.uuid4().hex[:8]}", 1).up()
    assert sandbox.running(small.node(1).pid, small.node(1).starttime)
    seen = adhoc(small, tmp_path, "node1", "ansible.builtin.stat", f"path={small.key}")
    assert seen["node1"]["stat"]["exists"] is False
    small.down()
    assert leftovers(small) == []
    small.down()
    assert Fleet.load(small.state_dir) is None


def test_airgap_nodes_reach_each_other_and_the_controller_only(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as host_listener:
        host_target = f"127.0.0.1:{host_listener.getsockname()[1]}"
        with Fleet(new_state_dir("harness-airgap-"), 2, airgap=True) as gapped:
            assert len(netns.existing(gapped.run_id)) == 3
            with gapped.call_in_controller(socket.create_server, (gapped.controller_address, 0)) as controller_listener:
                controller_target = f"{gapped.controller_address}:{controller_listener.getsockname()[1]}"
                results = adhoc(gapped, tmp_path, "all", "ansible.builtin.ping")
                assert {host: result.get("ping") for host, result in results.items()} == {"node1": "pong", "node2": "pong"}
                node2_target = f"{gapped.node(2).address}:22"
                seen = probe_from(gapped, tmp_path, "node1", host_target, controller_target, node2_target)
                routes = adhoc(gapped, tmp_path, "node1", "ansible.builtin.command", "ip -4 route show")["node1"]["stdout"]
        host_listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            host_listener.accept()  # nothing from the nodes ever arrived
    assert seen == {host_target: "ConnectionRefusedError", controller_target: "connected", node2_target: "connected"}
    # The fleet's own /24 and nothing else: no default route, so no way out.
    assert [route.split()[0] for route in routes.splitlines()] == [f"{gapped.subnet}.0/24"]
    assert leftovers(gapped) == []


@pytest.mark.skipif(not os.path.exists(sandbox.SUDO), reason="the operator login needs sudo (make sysdeps)")
def test_the_operator_logs_in_as_non_root_and_becomes_root_with_the_real_sudo(tmp_path):
    with Fleet(new_state_dir("harness-operator-"), 2, user=login.OPERATOR) as operated:
        operated.share_key(1)
        # With the inventory's become: who logged in, who runs the task, which sudo did it, and the host's / stays read-only.
        seen = adhoc(operated, tmp_path, "all", "ansible.builtin.shell",
                     "echo $SUDO_USER $SUDO_UID; id -u; command -v sudo; awk '$5 == \"/\" || $5 == \"/usr/bin/sudo\" {print $5, $6}' "
                     "/proc/self/mountinfo; touch /usr/fleet-probe 2>&1 || true")
        probe = f"/etc/fleet-operator-{operated.run_id}"
        written = adhoc(operated, tmp_path, "node2", "ansible.builtin.copy", f"content=as-root dest={probe} mode=0600")["node2"]
        # Without become, node1's login user reaches node2 with the key it was given, as a staging host that pushes does.
        hop = adhoc(operated, tmp_path, "node1", "ansible.builtin.command",
                    f"ssh -o BatchMode=yes {login.OPERATOR}@{operated.node(2).address} id -un", extra=("-e", "ansible_become=false"))["node1"]
        uids = {node.name: login.account(node.path, login.OPERATOR).uid for node in operated.nodes}
        written_path = operated.node(2).path / probe.lstrip("/")
        owner = (written_path.stat().st_uid, written_path.read_text())
    for host, result in seen.items():
        lines = result["stdout"].splitlines()
        assert uids[host] != 0 and lines[:3] == [f"{login.OPERATOR} {uids[host]}", "0", "/usr/bin/sudo"], result
        root_mount, sudo_mount = lines[3].split()[1].split(","), lines[4].split()[1].split(",")
        assert "nosuid" in root_mount and "ro" in root_mount and "nosuid" not in sudo_mount and "ro" in sudo_mount, lines
        assert "Read-only file system" in lines[5], lines
    assert written.get("changed") is True and owner == (0, "as-root"), written
    assert not Path(probe).exists() and not (operated.node(1).path / probe.lstrip("/")).exists()
    assert hop.get("stdout") == login.OPERATOR, hop
    assert leftovers(operated) == []
