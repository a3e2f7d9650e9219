"""The network side of the fleet-scale benchmark: what each shaped link carries alone, and a sampler of the node
links' counters that finds the transfer phase of a run."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from support.fleet import netns
from support.fleet.site import Site

CHUNK = 1 << 20
SAMPLE = 0.1  # seconds between two readings of the counters
WARMUP = 0.5  # seconds left out of a link check: the token bucket starts full


def link_rate(site: Site, link: str, inward: bool, seconds: float = 2.0) -> float:
    """Bytes per second one TCP stream gets through ``link`` alone, towards its namespace or out of it."""
    target = site.links[link]
    controller = site.fleet.gap.controller
    receiver_ns, receiver_addr, sender_ns = ((target.namespace, target.address, controller) if inward
                                             else (controller, site.fleet.controller_address, target.namespace))
    server = netns.call_in(receiver_ns, socket.create_server, (receiver_addr, 0))
    try:
        client = netns.call_in(sender_ns, socket.create_connection, server.getsockname(), 5)
        conn, _peer = server.accept()
    finally:
        server.close()
    received: list[tuple[float, int]] = []

    def receive() -> None:
        buffer, total = bytearray(CHUNK), 0
        with conn:
            while count := conn.recv_into(buffer):
                total += count
                received.append((time.monotonic(), total))

    reader = threading.Thread(target=receive)
    reader.start()
    data = bytes(CHUNK)
    with client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.sendall(data)
    reader.join()
    start = received[0][0] + WARMUP
    after = [(t, n) for t, n in received if t >= start]
    return (after[-1][1] - after[0][1]) / (after[-1][0] - after[0][0])


def check_links(site: Site, names: list[str], seconds: float = 2.0, floor: float = 0.9) -> dict[str, dict[str, float]]:
    """Each link alone, both ways, one after the other: {link: {"in": rate, "out": rate}}. Raises when one gets less
    than ``floor`` of its rate: the machine cannot honour it, and the benchmark would measure the machine."""
    rates: dict[str, dict[str, float]] = {}
    for name in names:
        # The best of up to three tries: another process on this machine may take the CPU during one.
        rates[name] = {}
        for way, inward in (("in", True), ("out", False)):
            for _try in range(3):
                rates[name][way] = max(rates[name].get(way, 0.0), link_rate(site, name, inward, seconds))
                if rates[name][way] >= floor * site.links[name].rate:
                    break
        low = {way: rate for way, rate in rates[name].items() if rate < floor * site.links[name].rate}
        if low:
            shown = ", ".join(f"{way} {rate / 2**20:.1f} MiB/s" for way, rate in low.items())
            raise SystemExit(f"link {name} reaches {shown} alone, below {floor:.0%} of its {site.links[name].rate / 2**20:.0f} MiB/s: "
                             "lower the rates (--wan-mib, --lan-mib)")
    return rates


@dataclass
class Sampler:
    """Reads every node link's counters in the controller namespace every 100 ms (/proc/thread-self/net/dev: one
    read, no process started) while a run goes on; ``samples`` holds (time, {bridge end: bytes towards the node})."""
    site: Site
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=netns.call_in, args=(self.site.fleet.gap.controller, self._loop), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        dev = Path("/proc/thread-self/net/dev")
        while not self._stop.is_set():
            now = time.monotonic()
            counters = {}
            for line in dev.read_text().splitlines()[2:]:
                name, values = line.split(":", 1)
                # A bridge end's transmit counter is what its namespace received.
                counters[name.strip()] = int(values.split()[8])
            self.samples.append((now, counters))
            self._stop.wait(SAMPLE)

    def transfer_phase(self, bridge_ends: list[str], floor: float, sustained: int = 10) -> tuple[float, float] | None:
        """(start, end) of the model's flow into the nodes behind ``bridge_ends``: from the first of ``sustained``
        samples in a row (1 s) in each of which they received at least ``floor`` bytes together, to the last sample
        that reached it. Ansible sending a module to every node is a burst of a few samples that may reach ``floor`` at
        low rates and many nodes; the model's flow does not stop. None when no sample reached it."""
        busy = []  # (start, end) of each sample that reached floor, None for one that did not
        for (before_t, before), (after_t, after) in pairwise(self.samples):
            moved = sum(after.get(end, 0) - before.get(end, 0) for end in bridge_ends)
            busy.append((before_t, after_t) if moved >= floor * (after_t - before_t) / SAMPLE else None)
        reached = [sample for sample in busy if sample]
        if not reached:
            return None
        flowing = (busy[i][0] for i in range(len(busy) - sustained + 1) if all(busy[i:i + sustained]))
        return next(flowing, reached[0][0]), reached[-1][1]
