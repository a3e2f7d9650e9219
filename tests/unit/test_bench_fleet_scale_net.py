"""The fleet-scale benchmark's transfer phase: where the model's flow into the nodes starts and ends."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# tools/bench is a folder of scripts, not a package: load the one module by its path.
_SPEC = importlib.util.spec_from_file_location("fleet_scale_net", Path(__file__).resolve().parents[2] / "tools" / "bench" / "fleet_scale_net.py")
net = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault(_SPEC.name, net)  # its dataclasses look their module up there
_SPEC.loader.exec_module(net)


def sampler(received_per_sample: list[int]) -> net.Sampler:
    """Counters every 100 ms of two nodes, each receiving half of what the list says for that sample."""
    samples, total = [(0.0, {"a": 0, "b": 0})], 0
    for i, moved in enumerate(received_per_sample, 1):
        total += moved // 2
        samples.append((i * net.SAMPLE, {"a": total, "b": total}))
    return net.Sampler(site=None, samples=samples)


def test_a_burst_of_modules_before_the_flow_is_not_its_start():
    # Ansible sends a module to every node (two samples above the floor), nothing for 2 s, then the model for 3 s.
    flow = sampler([4000, 4000] + [0] * 20 + [5000] * 30 + [0] * 5)
    start, end = flow.transfer_phase(["a", "b"], floor=1000)
    assert round(start, 1) == 2.2 and round(end, 1) == 5.2


def test_a_flow_shorter_than_a_second_still_has_a_phase():
    start, end = sampler([0, 5000, 5000, 0]).transfer_phase(["a", "b"], floor=1000)
    assert round(start, 1) == 0.1 and round(end, 1) == 0.3
    assert sampler([0, 0, 0]).transfer_phase(["a", "b"], floor=1000) is None
