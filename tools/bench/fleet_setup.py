"""The world of the fleet benchmark: a real-sshd fleet on disk, inventories for seed_models.yml with the
controller as the staging host, resetting nodes to a fresh state, and what a node holds of a model."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from common import WORK, drop_tree

from support.fleet import Fleet
from support.playbook import ANSIBLE_PLAYBOOK, REPO, ansible_env
from support.sdk import cache_dir as sdk_cache_dir

NODE_CACHE = "/var/cache/modelscope"
STAGING = WORK / "fleet-staging"
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
# What seed_models.yml leaves outside the cache on a node; a fresh node has none of it.
ENV_FILES = ("etc/profile.d/modelscope.sh", "etc/systemd/system.conf.d/modelscope.conf")


def start_fleet(nodes: int) -> Fleet:
    """Nodes on disk, not on tmpfs: they hold a full copy of the model each. They see the SDK virtualenvs."""
    sdk_cache_dir().mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="fleet-", dir=WORK))
    return Fleet(state, nodes, groups={"modelscope_nodes": None}, shared=[sdk_cache_dir()]).up()


def environment_files(fleet: Fleet) -> dict[str, bytes]:
    """Each node's /etc/environment, to put back between scenarios."""
    return {node.name: (node.path / "etc/environment").read_bytes() for node in fleet.nodes}


def reset_nodes(fleet: Fleet, environments: dict[str, bytes]) -> None:
    """Every node as it was when the fleet came up, and no staging cache or bundle on the controller."""
    for node in fleet.nodes:
        for entry in (node.path / "var/cache").iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        for name in ENV_FILES:
            (node.path / name).unlink(missing_ok=True)
        (node.path / "etc/environment").write_bytes(environments[node.name])
    drop_tree(STAGING)


def inventory(fleet: Fleet, name: str, model: str, endpoint: str, sdk_python: Path) -> Path:
    """The fleet's nodes, the controller as the staging host, and the settings; ``name`` keeps bundles apart."""
    directory = WORK / f"fleet-inventory-{name}"
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "group_vars").mkdir(parents=True)
    shutil.copy(fleet.inventory_path, directory / "hosts.yml")
    localhost = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    staging = {"modelscope_staging": {"hosts": {"localhost": localhost}}}
    (directory / "staging.yml").write_text(yaml.safe_dump(staging))
    settings = {
        "modelseed_models": [{"name": model}],
        "modelseed_cache_dir": NODE_CACHE,
        "modelseed_staging_cache_dir": str(STAGING / "cache"),
        "modelseed_bundle_dir": str(STAGING / f"bundle-{name}"),
        "modelseed_node_bundle_dir": f"/var/cache/modelseed-bundle-{name}",
        "modelseed_transport": "push",
        "modelseed_endpoint": endpoint,
        "modelseed_sdk_pythons": [str(sdk_python)],
        # Not in the inventory directory, where Ansible would read it as an inventory source.
        "modelseed_report_path": str(WORK / f"fleet-report-{name}.json"),
    }
    (directory / "group_vars" / "all.yml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return directory


def run_playbook(fleet: Fleet, inventory_dir: Path, playbook: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*fleet.command_prefix, ANSIBLE_PLAYBOOK, "-i", str(inventory_dir), str(playbook), *args],
                          env=ansible_env(ANSIBLE_STDOUT_CALLBACK="default", **(env or {})), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{playbook.name} failed ({proc.returncode}):\n{proc.stdout[-10000:]}\n{proc.stderr[-3000:]}")
    return proc


def seed(fleet: Fleet, inventory_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_playbook(fleet, inventory_dir, REPO / "seed_models.yml", *args, env=env)


def changed_hosts(proc: subprocess.CompletedProcess) -> list[str]:
    return [host for host, changed, _unreachable, _failed in RECAP.findall(proc.stdout) if int(changed)]


def shard_bytes(tree: Path, model: str, placed: bool = False) -> int:
    """Bytes of the model's weight shards under ``tree``, each file counted once (links and hard links aside).
    Every way of seeding puts them below a directory named after the model: NAME, or OWNER--NAME in the
    snapshots layout, whatever else the layout puts around it. ``placed``: only where an SDK finds them, outside
    the dot-directories in which downloads and installs stage files before they are verified."""
    owner, name = model.split("/")
    seen: dict[tuple[int, int], int] = {}
    for directory, dirs, files in os.walk(tree):
        if placed:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        if not {name, f"{owner}--{name}"} & set(Path(directory).relative_to(tree).parts):
            continue
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(st.st_mode) and name.startswith("model-") and name.endswith(".safetensors"):
                seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def check_every_node_holds(fleet: Fleet, model: str, shards: int, what: str) -> None:
    """Each node holds one full copy of the weights: a scenario that did less would not count."""
    for node in fleet.nodes:
        held = shard_bytes(node.path / "var/cache", model)
        if held != shards:
            raise SystemExit(f"{what}: {node.name} holds {held} bytes of {model}'s weights, not {shards}")


def give_staging_ssh(fleet: Fleet, index: int) -> None:
    """The staging node pushes to the nodes with a key of its own, as a real one would hold: the fleet's key."""
    ssh_dir = fleet.node(index).path / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(fleet.key, ssh_dir / "id_ed25519")
    (ssh_dir / "id_ed25519").chmod(0o600)
    shutil.copy(fleet.known_hosts, ssh_dir / "known_hosts")


def ssh_command(fleet: Fleet) -> list[str]:
    """ssh from where Ansible runs to a node (add root@ADDRESS and the remote command)."""
    return [*fleet.command_prefix, "ssh", "-i", str(fleet.key), "-o", f"UserKnownHostsFile={fleet.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]


def download_command(sdk_root: Path, endpoint: str, model: str) -> str:
    """The remote command of the status quo: the SDK's own `modelscope download` into NODE_CACHE, clean environment.
    Through the venv's python: the console script's shebang names the directory the venv was built in."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root", "MODELSCOPE_CACHE": NODE_CACHE,
           "MODELSCOPE_ENDPOINT": endpoint}
    return shlex.join(["env", "-i", *(f"{k}={v}" for k, v in env.items()), str(sdk_root / "bin" / "python"),
                       str(sdk_root / "bin" / "modelscope"), "download", "--model", model, "--cache_dir", NODE_CACHE])
