"""In CI a skipped test fails the run: nothing there may pass by not running.

A pytest plugin (tests/conftest.py loads it; ``-p support.ci_skips`` elsewhere). It acts when the ``CI``
environment variable is set to anything but empty, ``0`` or ``false`` (CI services set ``CI=true``): every
skip, whether of a test or of a whole module, is listed at the end and the exit status becomes 1 (tests
failed) if it was 0, or 5 (no tests ran: all were skipped at collection). Under pytest-xdist the controller
counts what the workers report.
"""

from __future__ import annotations

import os

import pytest

OFF = ("", "0", "false")


def ci_is_set(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get("CI", "").strip().lower() not in OFF


class SkipsFailCi:
    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_collectreport(self, report) -> None:
        if report.skipped:
            self.skipped.append(f"{report.nodeid}: {_reason(report)}")

    def pytest_runtest_logreport(self, report) -> None:
        # An expected failure is reported as skipped too; it ran, so it is not a skip.
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append(f"{report.nodeid}: {_reason(report)}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session) -> None:
        if self.skipped and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.skipped:
            return
        terminalreporter.write_sep("=", f"CI is set: {len(self.skipped)} skipped, which fails the run", red=True)
        for line in self.skipped:
            terminalreporter.write_line(line)


def _reason(report) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:  # (file, line, "Skipped: why")
        return str(report.longrepr[2])
    return str(report.longrepr)


def pytest_configure(config) -> None:
    # Only where the whole run is seen: not in an xdist worker, whose reports reach the controller.
    if ci_is_set() and not hasattr(config, "workerinput") and not config.pluginmanager.has_plugin("modelseed-ci-skips"):
        config.pluginmanager.register(SkipsFailCi(), "modelseed-ci-skips")
