"""The node role's systemd handlers on a real-sshd node where systemd seems to run.

The node gets /run/systemd/system (the role's sign of a running systemd) and, first on the PATH that its
/etc/environment sets for every ssh session, a `systemctl` that records each call and answers as systemd
does for a loaded, running unit. It stands in for the OS service manager only: ansible.builtin.systemd_service,
the handlers and modelscope_env all run for real. One node is both the staging host and the node (local
transport), so that seed_models.yml runs whole.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support.fleet import Fleet, new_state_dir, sandbox
from support.playbook import ANSIBLE_PLAYBOOK, REPO, ansible_env
from support.sample_models import MODEL

CALLS = "var/log/systemctl-calls"
RECORDER_DIR = "/opt/service-manager/bin"
# What Ubuntu ships in /etc/environment, with the recorder's directory in front.
NODE_PATH = f"{RECORDER_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# systemd_service runs `systemctl show UNIT` and reads LoadState and ActiveState; the other verbs succeed silently.
RECORDER = f"""#!/bin/sh
printf '%s\\n' "$*" >> /{CALLS}
case "$1" in
  show) printf 'Id=%s.service\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\nUnitFileState=enabled\\n' "$2" ;;
  is-active) echo active ;;
  is-enabled) echo enabled ;;
esac
exit 0
"""
DROPIN = "etc/systemd/system/vllm.service.d/modelscope.conf"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap") or not os.path.exists(sandbox.SSHD),
                       reason="the fleet needs root, bubblewrap and openssh-server"),
]


@pytest.fixture(scope="module")
def node_with_systemd():
    """A one-node fleet, node1 staging and seeding itself, with the recorder and /run/systemd/system in place."""
    groups = {"modelscope_staging": [1], "modelscope_nodes": [1]}
    with Fleet(new_state_dir("systemd-"), 1, groups=groups) as fleet:
        root = fleet.node(1).path
        recorder = root / RECORDER_DIR.lstrip("/") / "systemctl"
        recorder.parent.mkdir(parents=True)
        recorder.write_text(RECORDER)
        recorder.chmod(0o755)
        (root / "etc/environment").write_text(f'PATH="{NODE_PATH}"\n')
        # /run is the node's own tmpfs, reachable from inside only.
        ssh(fleet, "mkdir -p /run/systemd/system")
        yield fleet


def ssh(fleet: Fleet, command: str) -> str:
    node = fleet.node(1)
    proc = subprocess.run([*fleet.command_prefix, "ssh", "-i", str(fleet.key), "-o", f"UserKnownHostsFile={fleet.known_hosts}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                           f"root@{node.address}", command], capture_output=True, text=True, timeout=30, check=True)
    return proc.stdout


def seed(fleet: Fleet, directory: Path, hub, *args: str, **settings) -> list[str]:
    """Run seed_models.yml (``args`` added) with ``settings`` on top of the shared ones; the systemctl calls it made, in order."""
    shared = {
        "modelseed_models": [{"name": MODEL}],
        "modelseed_cache_dir": "/var/cache/modelscope",
        "modelseed_transport": "local",
        "modelseed_endpoint": hub.url,
        "modelseed_node_bundle_dir": "/srv/modelseed/bundle",  # the staging host's own bundle
        "modelseed_report_path": str(directory / "report.json"),
        "node_check_ready": False,
        **settings,
    }
    (directory / "group_vars").mkdir(parents=True, exist_ok=True)
    shutil.copy(fleet.inventory_path, directory / "hosts.yml")
    (directory / "group_vars" / "all.yml").write_text(yaml.safe_dump(shared, sort_keys=False))
    calls = fleet.node(1).path / CALLS
    calls.unlink(missing_ok=True)
    proc = subprocess.run([*fleet.command_prefix, ANSIBLE_PLAYBOOK, "-i", str(directory), str(REPO / "seed_models.yml"), *args],
                          env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default"), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"seed_models.yml failed ({proc.returncode}):\n{proc.stdout[-20000:]}\n{proc.stderr[-5000:]}"
    return calls.read_text().splitlines() if calls.exists() else []


def test_reload_on_dropin_change_restart_only_when_asked(node_with_systemd, hub, tmp_path):
    fleet = node_with_systemd
    dropin = fleet.node(1).path / DROPIN

    # First run: the drop-ins appear, systemd reloads once, and nothing restarts unless asked.
    assert seed(fleet, tmp_path / "first", hub, node_services=["vllm"]) == ["daemon-reload"]
    assert "MODELSCOPE_CACHE=/var/cache/modelscope" in dropin.read_text()
    assert (fleet.node(1).path / "etc/systemd/system.conf.d/modelscope.conf").is_file()
    # The recorder is found through the PATH line, which the role keeps beside its own.
    assert f'PATH="{NODE_PATH}"' in (fleet.node(1).path / "etc/environment").read_text().splitlines()

    # Same settings again: no drop-in changes, so no reload.
    assert seed(fleet, tmp_path / "again", hub, node_services=["vllm"]) == []

    # From here on the env phase alone (--tags env): the handlers belong to it, and the two whole runs above showed
    # that the rest of the play leaves systemd alone.
    # Restarts asked for, but nothing changed: still nothing.
    assert seed(fleet, tmp_path / "asked", hub, "--tags", "env", node_services=["vllm"], node_restart_services=True) == []

    # A new value with restarts asked for: reload first, then vllm restarts (systemd_service looks at it, then restarts).
    changed = seed(fleet, tmp_path / "changed", hub, "--tags", "env", node_services=["vllm"], node_restart_services=True,
                   node_env_extra={"VLLM_USE_MODELSCOPE": "True"})
    assert changed == ["daemon-reload", "show vllm", "restart vllm"]
    assert "VLLM_USE_MODELSCOPE=True" in dropin.read_text()

    # The same new value again: nothing to reload, nothing to restart.
    assert seed(fleet, tmp_path / "settled", hub, "--tags", "env", node_services=["vllm"], node_restart_services=True,
                node_env_extra={"VLLM_USE_MODELSCOPE": "True"}) == []

    # /etc/environment edited by hand: the run puts the line back, but no unit's environment changed, so
    # systemd neither reloads nor restarts anything.
    environment = fleet.node(1).path / "etc/environment"
    environment.write_text(f'PATH="{NODE_PATH}"\n')
    assert seed(fleet, tmp_path / "by-hand", hub, "--tags", "env", node_services=["vllm"], node_restart_services=True,
                node_env_extra={"VLLM_USE_MODELSCOPE": "True"}) == []
    assert "MODELSCOPE_CACHE=/var/cache/modelscope" in environment.read_text().splitlines()

    # A change without restarts asked for: reload only.
    assert seed(fleet, tmp_path / "quiet", hub, "--tags", "env", node_services=["vllm"], node_env_extra={"VLLM_USE_MODELSCOPE": "False"}) \
        == ["daemon-reload"]
