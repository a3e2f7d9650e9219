"""The fleet-scale benchmark's arguments and how an interrupted sweep resumes from its results file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

# tools/bench is a folder of scripts, not a package: load the one module by its path.
_SPEC = importlib.util.spec_from_file_location("fleet_scale_cells", Path(__file__).resolve().parents[2] / "tools" / "bench" / "fleet_scale_cells.py")
cells = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(cells)

RESULTS = Path("results.jsonl")


def test_the_defaults_are_the_full_sweep():
    args = cells.parse_args([], RESULTS)
    assert (args.nodes, args.runs, args.ways, args.size_mib, args.wan_mib, args.lan_mib, args.web_seed_mib) == (
        [2, 4, 8, 16], 3, ["cli", "push", "pull", "p2p"], 256, 20, 100, 40)
    assert cells.partial(args.ways, args.nodes, dict.fromkeys(args.ways, args.runs)) is None


def test_sizes_and_ways_are_taken_once_and_sizes_in_order():
    args = cells.parse_args(["--nodes", "8", "2", "8", "--ways", "pull", "cli", "pull"], RESULTS)
    assert (args.nodes, args.ways) == ([2, 8], ["pull", "cli"])


@pytest.mark.parametrize(("argv", "says"), [
    (["--nodes", "0"], "--nodes: each size from 1 to 249"),
    (["--nodes", "2", "250"], "--nodes: each size from 1 to 249"),
    (["--runs", "0"], "--runs: at least 1"),
    (["--wan-mib", "0"], "--wan-mib: at least 1"),
    (["--web-seed-mib", "0"], "--web-seed-mib: at least 1"),
    (["--size-mib", "2", "--files", "3"], "--files: at most one shard per MiB"),
    (["--link-floor", "1.2"], "--link-floor: a fraction above 0, at most 1"),
    (["--play-var", "forks"], "--play-var: KEY=VALUE, not forks"),
    (["--ways", "rsync"], "invalid choice: 'rsync'"),
])
def test_bad_arguments_are_refused_with_a_reason(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cells.parse_args(argv, RESULTS)
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


def test_cells_of_other_settings_are_neither_skipped_nor_reported():
    base = cells.config_key(cells.parse_args([], RESULTS))
    assert cells.config_key(cells.parse_args(["--lan-mib", "50"], RESULTS)) != base
    assert cells.config_key(cells.parse_args(["--web-seed-mib", "100"], RESULTS)) != base
    assert cells.config_key(cells.parse_args(["--play-var", "b=2", "--play-var", "a=1"], RESULTS)) == {**base, "play_vars": ["a=1", "b=2"]}
    rows = [{"kind": "cell", "way": "cli", "nodes": 2, "run": 1, "config": base},
            {"kind": "cell", "way": "push", "nodes": 2, "run": 1, "config": {**base, "lan": 1}},
            {"kind": "links", "nodes": 2, "config": base}]
    assert cells.done(rows, base) == {("cli", 2, 1)}


def test_an_interrupted_sweep_resumes_with_the_cells_it_had_not_finished(tmp_path):
    results = tmp_path / "results.jsonl"
    config = cells.config_key(cells.parse_args([], results))
    for way in ("cli", "push"):
        cells.append(results, {"kind": "cell", "way": way, "nodes": 2, "run": 1, "config": config})
    # Killed while writing the third cell.
    with results.open("a") as out:
        out.write(json.dumps({"kind": "cell", "way": "pull", "nodes": 2, "run": 1, "config": config})[:30])
    rows = cells.read_results(results)
    assert [r["way"] for r in rows] == ["cli", "push"]
    todo = cells.plan(["cli", "push", "pull"], [2, 4], 2, cells.done(rows, config))
    # Run 2 takes the ways the other way round, so that no way always runs first on a fresh site.
    assert todo == {2: [(1, "pull"), (2, "pull"), (2, "push"), (2, "cli")],
                    4: [(1, "cli"), (1, "push"), (1, "pull"), (2, "pull"), (2, "push"), (2, "cli")]}
    cells.repair(results)
    cells.append(results, {"kind": "cell", "way": "pull", "nodes": 2, "run": 1, "config": config})
    assert [r["way"] for r in cells.read_results(results)] == ["cli", "push", "pull"]
    assert cells.plan(["cli", "push", "pull"], [2], 1, cells.done(cells.read_results(results), config)) == {}


@pytest.mark.parametrize(("ways", "sizes", "runs", "says"), [
    (["cli", "push", "pull"], [2, 4], [1, 1, 1], "N = 8, 16; cells with 1 run, not 3; the ways p2p"),
    (["cli", "push", "pull", "p2p"], [2, 4, 8, 16], [2, 2, 2, 2], "cells with 2 runs, not 3"),
    (["cli", "push", "pull", "p2p"], [2, 4, 8, 16], [1, 1, 2, 3], "cells of pull with 2 runs, not 3; cells of cli, push with 1 run, not 3"),
    (["cli", "push", "pull", "p2p"], [2, 4, 8, 16, 32], [3, 3, 3, 3], None),
])
def test_a_partial_sweep_says_what_it_leaves_out(ways, sizes, runs, says):
    assert cells.partial(ways, sizes, dict(zip(ways, runs, strict=True))) == says
