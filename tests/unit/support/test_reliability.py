"""The reliability report: written only for a run that passed, with pytest's result, and "not measured" where nothing was."""

from __future__ import annotations

import pytest

from support import reliability
from support.reliability import PytestRun

PASSED = PytestRun(0, passed=3, skipped=1, failed=0, errors=0, skips=["t.py::test_x (no fleet here)"])


@pytest.fixture
def log(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    monkeypatch.setenv("MODELSEED_RELIABILITY_LOG", str(path))
    return path


def test_a_failed_run_writes_nothing_and_leaves_the_last_report(log, tmp_path):
    reliability.record("hub: HTTP 500", outcome="completes", handled=1, corrupt=0)
    report = tmp_path / "reliability.md"
    report.write_text("the last good report\n")
    assert not reliability.publish(report, reliability.read(), PytestRun(1, passed=2, skipped=0, failed=1, errors=0), title="R")
    assert not reliability.publish(report, reliability.read(), PytestRun(2), title="R")  # interrupted: no JUnit counts
    assert report.read_text() == "the last good report\n"
    assert not reliability.publish(tmp_path / "none.md", [], PASSED, title="R")  # nothing recorded
    assert not (tmp_path / "none.md").exists()


def test_an_injection_that_did_not_end_as_expected_writes_nothing(log, tmp_path):
    reliability.record("kill -9 x", outcome="old or new", handled=0, corrupt=1, kill="before completion")
    assert not reliability.publish(tmp_path / "r.md", reliability.read(), PASSED, title="R")
    assert not (tmp_path / "r.md").exists()


def test_a_passed_run_is_written_with_its_exit_code_and_counts(log, tmp_path):
    reliability.record("hub: HTTP 500", outcome="completes", handled=1, corrupt=0)
    report = tmp_path / "docs" / "reliability.md"
    assert reliability.publish(report, reliability.read(), PASSED, title="R", preamble=f"- result: {PASSED.line()}")
    text = report.read_text()
    assert "pytest exit code 0; tests passed 3, skipped 1, failed 0, errors 0" in text
    assert "| hub: HTTP 500 | completes | 1 | 1 | 0 | not measured |" in text


def test_cells_not_measured_say_so(log):
    reliability.record("bad input: x", outcome="fails", handled=2, injected=2)
    reliability.record("secrets: y", outcome="nowhere", handled=1, leaked=0)
    reliability.record("hub: z", outcome="completes", handled=1, corrupt=0)
    reliability.record("hub: z", outcome="completes", handled=1)
    text = reliability.render(reliability.read(), title="R")
    assert "| bad input: x | fails | 2 | 2 | not measured | not measured |" in text
    assert "| secrets: y | nowhere | 1 | 1 | not measured | 0 |" in text
    assert "| hub: z | completes | 2 | 2 | 0 (in 1 of 2 injections) | not measured |" in text
    assert "| **all** | | **5** | **5** | **0 (in 1 of 5 injections)** | **0 (in 1 of 5 injections)** |" in text
    assert "SIGKILL timing" not in text


def test_kills_are_tallied_by_timing_and_a_missed_one_is_no_injection(log):
    for timing in ("before completion", "before completion", "after completion", "missed"):
        reliability.record("kill -9 m", outcome="old or new", handled=1, corrupt=0, kill=timing)
    rows = reliability.read()
    text = reliability.render(rows, title="R")
    assert "| kill -9 m | old or new | 3 | 3 | 0 |" in text
    assert "| kill -9 m | 2 | 1 | 1 |" in text
    assert "kills 2 before completion, 1 after it, 1 missed" in reliability.summary_line(rows)
    assert reliability.all_well(rows)
    with pytest.raises(ValueError, match="kill must be one of"):
        reliability.record("kill -9 m", outcome="x", handled=1, kill="during")


def test_pytest_counts_come_from_its_junit_xml(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">'
        '<testcase classname="t" name="a"/><testcase classname="t" name="b"><skipped message="no nginx"/></testcase>'
        '</testsuite></testsuites>')
    run = PytestRun.from_junit(1, junit)
    assert (run.passed, run.skipped, run.failed, run.errors) == (2, 1, 1, 1)
    assert run.skips == ["t::b (no nginx)"] and not run.ok()
    missing = PytestRun.from_junit(2, tmp_path / "absent.xml")
    assert missing.line() == "pytest exit code 2; tests passed not measured, skipped not measured, failed not measured, errors not measured"
