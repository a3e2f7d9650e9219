"""Command line, for molecule's playbooks (p2p kills and restarts a node) and for trying things by hand (run as root, from tests/):

    python -m support.fleet up --nodes 3 --state DIR [--airgap [--proxy]] [--group staging=1 --group nodes=2-3]
                               [--hostvars KEY=VALUE | --hostvars @vars.yml ...] [--shared DIR ...] [--user deploy]
    python -m support.fleet prefix --state DIR     # the command prefix for ansible (air-gap mode), shell-quoted
    python -m support.fleet share-key --state DIR --node 1   # node 1's login user gets the fleet's ssh key
    python -m support.fleet down --state DIR

``up`` writes DIR/inventory.yml and DIR/instance_config.yml and prints the inventory.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

from .errors import FleetError
from .fleet import Fleet, down
from .login import ROOT, USERS


def parse_group(text: str) -> tuple[str, list[int] | None]:
    """``NAME`` (every node) or ``NAME=1,3-5``."""
    name, _sep, spec = text.partition("=")
    if not spec:
        return name, None
    members: list[int] = []
    for part in spec.split(","):
        first, _dash, last = part.partition("-")
        members.extend(range(int(first), int(last or first) + 1))
    return name, members


def parse_hostvars(items: list[str]) -> dict:
    """``KEY=VALUE`` with a YAML value, or ``@FILE`` holding a YAML mapping."""
    result: dict = {}
    for item in items:
        if item.startswith("@"):
            result.update(yaml.safe_load(Path(item[1:]).read_text(encoding="utf-8")) or {})
        else:
            key, sep, value = item.partition("=")
            if not sep:
                raise FleetError(f"--hostvars takes KEY=VALUE or @FILE, not {item!r}")
            result[key] = yaml.safe_load(value)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m support.fleet", description="A test fleet of sshd nodes on this machine.")
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="start a fleet and print its inventory")
    up_cmd.add_argument("--nodes", type=int, default=3)
    up_cmd.add_argument("--airgap", action="store_true", help="each node in a network namespace of its own")
    up_cmd.add_argument("--proxy", action="store_true", help="air-gap: reach nodes through an ssh ProxyCommand, no prefix needed")
    up_cmd.add_argument("--shared", action="append", default=[], type=Path, metavar="DIR", help="host dir nodes see read-only")
    up_cmd.add_argument("--group", action="append", default=[], metavar="NAME[=1,2-3]", help="repeatable; default: all in 'fleet'")
    up_cmd.add_argument("--hostvars", action="append", default=[], metavar="KEY=VALUE|@FILE", help="added to every host")
    up_cmd.add_argument("--subnet", default="10.213.0", help="air-gap /24, as its first three octets")
    up_cmd.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for each sshd")
    up_cmd.add_argument("--user", choices=USERS, default=ROOT, help="whom the inventory logs in as (non-root: with become)")
    share_cmd = commands.add_parser("share-key", help="give a node's login user the fleet's key and known_hosts")
    share_cmd.add_argument("--node", required=True, type=lambda text: int(text) if text.isdigit() else text,
                           help="node number (1-based) or name (node1)")
    for name, text in (("down", "stop a fleet and remove its state dir"), ("prefix", "print the command prefix for ansible")):
        commands.add_parser(name, help=text)
    for name, text in (("kill", "SIGKILL one node's sandbox (its tree stays)"), ("restart", "start one node again on its tree")):
        commands.add_parser(name, help=text).add_argument("--node", required=True, type=lambda text: int(text) if text.isdigit() else text,
                                                          help="node number (1-based) or name (node1)")
    for sub in commands.choices.values():
        sub.add_argument("--state", required=True, type=Path, help="the fleet's state directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            groups = dict(parse_group(g) for g in args.group) or None
            fleet = Fleet(args.state, args.nodes, airgap=args.airgap, groups=groups, hostvars=parse_hostvars(args.hostvars),
                          subnet=args.subnet, ready_timeout=args.timeout, shared=args.shared, proxy=args.proxy,
                          user=args.user).up()
            sys.stdout.write(fleet.inventory_path.read_text(encoding="utf-8"))
        elif args.command == "down":
            down(args.state)
        else:
            fleet = Fleet.load(args.state)
            if fleet is None:
                raise FleetError(f"no fleet in {args.state}")
            if args.command == "share-key":
                fleet.share_key(args.node)
            elif args.command == "kill":
                fleet.kill(args.node)
            elif args.command == "restart":
                fleet.restart(args.node)
            else:
                print(shlex.join(fleet.command_prefix))
    except FleetError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
