"""The site of the fleet-scale benchmark: a hub namespace behind one shaped WAN link, a shaped LAN link per node."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading

import pytest

from support.fleet import Fleet, netns, new_state_dir, sandbox
from support.fleet.site import DEVICE, Site

WAN, LAN = 20 << 20, 100 << 20
PAYLOAD = 1 << 20

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap") or not os.path.exists(sandbox.SSHD) or not shutil.which("tc"),
                       reason="the site needs root, bubblewrap, openssh-server and iproute2"),
]


def shaping(namespace: str, device: str) -> dict:
    proc = subprocess.run(["tc", "-n", namespace, "-j", "qdisc", "show", "dev", device], capture_output=True, text=True, check=True)
    return {q["kind"]: q["options"]["rate"] for q in json.loads(proc.stdout) if q.get("root")}


def send(sender_ns: str, receiver_ns: str, address: str) -> int:
    """PAYLOAD bytes from a socket in one namespace to a listener in another; what arrived."""
    with netns.call_in(receiver_ns, socket.create_server, (address, 0)) as server:
        received = []

        def receive() -> None:
            conn, _peer = server.accept()
            with conn:
                while chunk := conn.recv(1 << 16):
                    received.append(len(chunk))

        reader = threading.Thread(target=receive)
        reader.start()
        with netns.call_in(sender_ns, socket.create_connection, server.getsockname(), 5) as client:
            client.sendall(bytes(PAYLOAD))
        reader.join()
    return sum(received)


def test_every_link_is_shaped_both_ways_and_counts_what_its_end_sent():
    with Site(new_state_dir("site-"), 2, wan=WAN, lan=LAN) as site:
        controller = site.fleet.gap.controller
        assert sorted(netns.existing(site.fleet.run_id)) == sorted([*site.fleet.gap.names, site.hub_namespace])
        for link in site.links.values():
            assert shaping(controller, link.bridge_end) == {"tbf": link.rate}
            assert shaping(link.namespace, DEVICE) == {"tbf": link.rate}
        assert {name: link.rate for name, link in site.links.items()} == {"wan": WAN, "node1": LAN, "node2": LAN}

        hub_before, node_before = site.sent("wan"), site.sent("node2")
        # The hub reaches a node across the bridge, and the node's reply leaves through its own link.
        assert send(site.hub_namespace, site.links["node2"].namespace, site.fleet.node(2).address) == PAYLOAD
        assert send(site.links["node2"].namespace, site.hub_namespace, site.hub_address) == PAYLOAD
        assert site.sent("wan") - hub_before >= PAYLOAD
        assert site.sent("node2") - node_before >= PAYLOAD
    assert netns.existing(site.fleet.run_id) == []


def test_the_fleets_own_down_takes_the_hub_namespace_too():
    site = Site(new_state_dir("site-"), 1, wan=WAN, lan=LAN, netns_prefix="sitetest").up()
    try:
        assert sorted(netns.existing(site.fleet.run_id, "sitetest")) == [f"sitetest-{site.fleet.run_id}-{end}" for end in ("ctl", "hub", "node1")]
        # As another process would, from the state dir alone.
        Fleet.load(site.fleet.state_dir).down()
        assert netns.existing(site.fleet.run_id, "sitetest") == []
    finally:
        site.down()
