"""What a molecule scenario runs against, in one process: the test hub with the sample model, the sshd fleet, and an
inventory file that adds both to molecule's inventory (molecule/resources/create.yml and destroy.yml).

    python -m support.molecule_world up --world DIR --inventory FILE --nodes N [--group NAME=1-3 ...]
                                        [--airgap] [--user deploy] [--staging-python]
    python -m support.molecule_world down --world DIR --inventory FILE

Run as root, from tests/, with the Python that runs ansible-playbook. ``up`` first takes down whatever an earlier
run left in DIR. ``down`` stops the hub (and the air gap's tripwire) by their recorded PIDs, takes the fleet down, and
removes DIR and FILE; it may be repeated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from . import publish_sample
from .fleet import Fleet
from .fleet import down as fleet_down
from .fleet.__main__ import parse_group
from .sdk import cache_dir, ensure_sdk

SUPPORT_DIR = Path(__file__).resolve().parent
# What the nodes load the model with in verify (every one offline; the newest online too).
SDK_VERSIONS = ("1.37.1", "1.40.2")
# Programs started detached, by name, with the module each one runs (checked before a PID is signalled).
DETACHED = {"hub": "support.mshub", "tripwire": "support.tripwire"}


def start_detached(world: Path, name: str, argv: list[str], timeout: float = 30) -> str:
    """Start ``argv`` in a session of its own, record its PID in <world>/<name>.pid and return its first line of
    output (where it listens)."""
    out, err = world / f"{name}.out", world / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=SUPPORT_DIR.parent,
                                start_new_session=True)
    (world / f"{name}.pid").write_text(f"{proc.pid}\n", encoding="ascii")
    deadline = time.monotonic() + timeout
    while not out.read_text(encoding="utf-8").strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {name} did not start: {err.read_text(encoding='utf-8', errors='replace')}")
        time.sleep(0.02)
    return out.read_text(encoding="utf-8").splitlines()[0].strip()


def stop_detached(world: Path, name: str) -> None:
    """Stop what start_detached started, once its recorded PID still runs the same module."""
    pid_file = world / f"{name}.pid"
    try:
        pid = int(pid_file.read_text(encoding="ascii"))
    except (FileNotFoundError, ValueError):
        return
    with contextlib.suppress(OSError):
        if DETACHED[name].encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)
    pid_file.unlink()


def merge(base: dict, extra: dict) -> dict:
    """``extra`` laid over ``base``, mappings merged key by key."""
    result = dict(base)
    for key, value in extra.items():
        result[key] = merge(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def inventory(fleet: Fleet, world: Path, endpoint: str, sdk_pythons: list[str], tripwire_port: str | None,
              staging_python: bool) -> dict:
    """The fleet's inventory with this run's settings; air gap: the controller stages (it reaches the hub) and
    pushes to the nodes through the fleet's ProxyCommand."""
    run = {"all": {"vars": {
        "molecule_world": str(world),
        "fleet_state": str(world / "fleet"),
        "fleet_support_dir": str(SUPPORT_DIR.parent),
        "modelseed_endpoint": endpoint,
        "modelseed_sdk_pythons": sdk_pythons,
        "modelseed_report_path": str(world / "report.json"),
    }}}
    result = merge(fleet.inventory, run)
    if staging_python:
        # The staging host runs modules with this Python (its virtualenv is shared with the nodes): torf, for p2p.
        staging = next(iter(fleet.inventory["all"]["children"]["modelscope_staging"]["hosts"]))
        result = merge(result, {"all": {"hosts": {staging: {"ansible_python_interpreter": sys.executable}}}})
    if tripwire_port is not None:
        result = merge(result, {"all": {
            "children": {"modelscope_staging": {"hosts": {"localhost": {
                "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}},
            "vars": {
                "modelseed_staging_cache_dir": str(world / "staging-cache"),
                "modelseed_bundle_dir": str(world / "bundle"),
                "staging_http_state_dir": str(world / "http"),
                "modelseed_node_endpoint": f"http://{fleet.controller_address}:{tripwire_port}",
            }}})
    return result


def up(args: argparse.Namespace) -> None:
    down(args)
    world = args.world
    world.mkdir(parents=True)
    sdk_pythons = [str(ensure_sdk(version).python) for version in SDK_VERSIONS]
    publish_sample.main(["--root", str(world / "hub"), "--expected", str(world / "expected.json")])
    endpoint = start_detached(world, "hub", [sys.executable, "-m", DETACHED["hub"], "--root", str(world / "hub"),
                                             "--log", str(world / "hub.log")])
    shared = [cache_dir(), SUPPORT_DIR]
    if args.staging_python:
        shared += sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()})
    groups = dict(parse_group(group) for group in args.group) or None
    fleet = Fleet(world / "fleet", args.nodes, airgap=args.airgap, groups=groups, shared=shared, proxy=args.airgap,
                  user=args.user).up()
    tripwire_port = None
    if args.airgap:
        # Where air-gapped nodes would look for a hub, in the namespace they reach: it must see nobody.
        tripwire_port = start_detached(world, "tripwire", [*fleet.command_prefix, sys.executable, "-m", DETACHED["tripwire"],
                                                           "--host", fleet.controller_address,
                                                           "--log", str(world / "tripwire.log")])
    if groups and "modelscope_staging" in groups:
        # The staging node pushes to the nodes with rsync over ssh, as the login user: its ~/.ssh gets the fleet's key.
        fleet.share_key(groups["modelscope_staging"][0])
    args.inventory.parent.mkdir(parents=True, exist_ok=True)
    args.inventory.write_text(yaml.safe_dump(inventory(fleet, world, endpoint, sdk_pythons, tripwire_port,
                                                       args.staging_python), sort_keys=False), encoding="utf-8")


def down(args: argparse.Namespace) -> None:
    for name in DETACHED:
        stop_detached(args.world, name)
    fleet_down(args.world / "fleet")
    shutil.rmtree(args.world, ignore_errors=True)
    args.inventory.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m support.molecule_world", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="bring up the hub, the fleet and the inventory")
    up_cmd.add_argument("--nodes", type=int, required=True)
    up_cmd.add_argument("--group", action="append", default=[], metavar="NAME[=1,2-3]", help="repeatable")
    up_cmd.add_argument("--airgap", action="store_true", help="nodes in network namespaces of their own; the controller stages")
    up_cmd.add_argument("--user", default="root", help="whom Ansible logs in as (deploy: non-root, with become)")
    up_cmd.add_argument("--staging-python", action="store_true", help="the staging host runs modules with this Python")
    commands.add_parser("down", help="stop and remove everything up brought up")
    for sub in commands.choices.values():
        sub.add_argument("--world", required=True, type=Path, help="the scenario's working directory")
        sub.add_argument("--inventory", required=True, type=Path, help="the inventory file to write for molecule")
    args = parser.parse_args(argv)
    (up if args.command == "up" else down)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
