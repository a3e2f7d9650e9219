"""How the benchmark reports judge a target from the runs of two cells."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# tools/bench is a folder of scripts, not a package: load the one module by its path.
_SPEC = importlib.util.spec_from_file_location("bench_common", Path(__file__).resolve().parents[2] / "tools" / "bench" / "common.py")
common = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(common)


def test_one_run_each_claims_no_spread():
    assert common.verdict([10.0], [20.0]) == "0.50x: target met in one run each (no spread: noise not ruled out)"
    assert common.verdict([30.0, 31.0], [20.0]) == "1.52x: target NOT met in one run each (no spread: noise not ruled out)"


def test_spreads_apart_and_overlapping_are_told_apart():
    assert common.verdict([10.0, 11.0, 12.0], [20.0, 21.0, 22.0]) == "0.52x: target met; the spreads do not overlap"
    assert common.verdict([10.0, 15.0, 21.0], [20.0, 21.0, 22.0]).endswith("but the spreads overlap, so the two are not distinguishable")


def test_a_ratio_target_is_judged_against_the_other_spread_times_the_target():
    # 1.48x by the medians, but one run of the first is slower than 1.5 times a run of the second.
    assert common.verdict([35.4, 36.3, 39.7], [24.2, 24.5, 24.8], 1.5) == (
        "1.48x: target met by the medians, but the spread and 1.5 times the other's overlap, so the two are not distinguishable")
    assert common.verdict([30.0, 31.0, 32.0], [24.2, 24.5, 24.8], 1.5) == (
        "1.27x: target met; the spread and 1.5 times the other's do not overlap")
