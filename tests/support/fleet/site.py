"""A fleet shaped like a site: every node on a rate-limited LAN link of its own, the hub behind one shared WAN link.

An air-gapped fleet (see ``netns``) plus a hub namespace wired to the same bridge by one veth pair. Token-bucket
filters (``tc tbf``) on both ends of every veth limit both directions: the WAN link at ``wan`` bytes per second,
each node's link at ``lan``. A server started in the hub namespace (``call_in_hub``, or ``hub_prefix`` before a
command) reaches the nodes only through the WAN link, so the link counters (``sent``) say what left the hub and
what left each node.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import netns
from .fleet import Fleet

HUB_HOST = 253  # the hub's last octet; the controller's bridge is .254, nodes are 1 to 250
WAN_DEVICE = "wan"  # the WAN veth's end on the bridge, in the controller namespace
DEVICE = "eth0"  # the far end, in the hub's or a node's namespace


@dataclass(frozen=True)
class Link:
    """A veth pair between the bridge and one namespace: ``bridge_end`` in the controller namespace."""
    name: str
    namespace: str
    address: str
    bridge_end: str
    rate: int


class Site:
    """``size`` nodes (an air-gapped ``Fleet``) and a hub namespace; usable as a context manager."""

    def __init__(self, state_dir: str | Path, size: int, *, wan: int, lan: int, groups: dict | None = None,
                 hostvars: dict | None = None, shared: list[str | Path] = (), netns_prefix: str = netns.DEFAULT_PREFIX):
        self.fleet = Fleet(state_dir, size, airgap=True, groups=groups, hostvars=hostvars, shared=shared, netns_prefix=netns_prefix)
        self.wan, self.lan = wan, lan
        self._hub_made = False

    @property
    def hub_namespace(self) -> str:
        return f"{self.fleet.netns_prefix}-{self.fleet.run_id}-hub"

    @property
    def hub_address(self) -> str:
        return f"{self.fleet.subnet}.{HUB_HOST}"

    @property
    def hub_prefix(self) -> list[str]:
        """Put this before a command that must run in the hub's namespace (a hub server)."""
        return netns.command_prefix(self.hub_namespace)

    def call_in_hub(self, function, *args):
        return netns.call_in(self.hub_namespace, function, *args)

    @property
    def links(self) -> dict[str, Link]:
        """Every shaped link by name: ``wan`` and each node's name."""
        gap = self.fleet.gap
        wan = {"wan": Link("wan", self.hub_namespace, self.hub_address, WAN_DEVICE, self.wan)}
        return wan | {node.name: Link(node.name, gap.node(node.index), node.address, f"v{node.index}", self.lan)
                      for node in self.fleet.nodes}

    def __enter__(self) -> Site:
        return self.up()

    def __exit__(self, *exc_info) -> None:
        self.down()

    def up(self) -> Site:
        self.fleet.up()
        try:
            gap = self.fleet.gap
            netns.add(self.hub_namespace)
            self._hub_made = True
            netns.run(gap.controller, [f"link add {WAN_DEVICE} type veth peer name {DEVICE} netns {self.hub_namespace}",
                                       f"link set {WAN_DEVICE} master br0", f"link set {WAN_DEVICE} up"])
            netns.run(self.hub_namespace, ["link set lo up", f"addr add {self.hub_address}/24 dev {DEVICE}", f"link set {DEVICE} up"])
            for link in self.links.values():
                netns.limit_rate(gap.controller, link.bridge_end, link.rate)  # towards the namespace
                netns.limit_rate(link.namespace, DEVICE, link.rate)  # out of it
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """The hub namespace (its veth goes with it), then the fleet. Safe to repeat."""
        if self._hub_made and self.fleet.run_id:
            netns.destroy([self.hub_namespace])
            self._hub_made = False
        self.fleet.down()

    def sent(self, link: str) -> int:
        """Bytes the far end of ``link`` (the hub, or a node) has sent so far, from its interface counters (ip -s link)."""
        target = self.links[link]
        proc = subprocess.run(["ip", "-n", target.namespace, "-s", "-j", "link", "show", "dev", DEVICE],
                              capture_output=True, text=True, check=True)
        return json.loads(proc.stdout)[0]["stats64"]["tx"]["bytes"]
