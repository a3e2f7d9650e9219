"""With CI set, a skipped test fails the run; without it, a skip is a skip.

Each case runs a real pytest in a subprocess on a tiny generated test file, with the plugin loaded as
tests/conftest.py loads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.ci_skips import ci_is_set

TESTS = Path(__file__).resolve().parents[2]

SKIPS = {
    "a call to pytest.skip": "import pytest\n\ndef test_needs_nginx():\n    pytest.skip('no nginx here')\n\ndef test_runs():\n    pass\n",
    "a skipif mark": "import pytest\n\n@pytest.mark.skipif(True, reason='not root')\ndef test_needs_root():\n    pass\n",
    "a skipped module": "import pytest\n\npytest.skip('no bubblewrap', allow_module_level=True)\n\ndef test_fleet():\n    pass\n",
    "a skip in a fixture": "import pytest\n\n@pytest.fixture\ndef fleet():\n    pytest.skip('no sshd')\n\ndef test_fleet(fleet):\n    pass\n",
}
PASSES = "def test_runs():\n    pass\n"
XFAIL = "import pytest\n\n@pytest.mark.xfail(reason='known', strict=True)\ndef test_known():\n    assert False\n"


def run_pytest(tmp_path: Path, sources: dict[str, str], ci: str | None, *extra: str) -> subprocess.CompletedProcess:
    """pytest on ``sources`` ({file stem: code}) in ``tmp_path``, with ``CI`` set to ``ci`` (unset for None)."""
    for stem, source in sources.items():
        (tmp_path / f"test_{stem}.py").write_text(source)
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    env["PYTHONPATH"] = str(TESTS)
    if ci is not None:
        env["CI"] = ci
    # rootdir is tmp_path, so only the plugin under test is loaded, not this repository's conftest files.
    command = [sys.executable, "-m", "pytest", "-p", "support.ci_skips", "-p", "no:cacheprovider", "-q", "-c", os.devnull,
               "--rootdir", str(tmp_path), *extra, str(tmp_path)]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_with_ci_true_every_kind_of_skip_fails_the_run_and_is_named(tmp_path):
    done = run_pytest(tmp_path, {f"skip_{i}": source for i, source in enumerate(SKIPS.values())} | {"passes": PASSES}, "true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"CI is set: {len(SKIPS)} skipped, which fails the run" in done.stdout, done.stdout
    for kind, source in SKIPS.items():
        assert source.split("'")[1] in done.stdout, f"{kind}: {done.stdout}"


def test_with_ci_true_a_run_where_every_test_was_skipped_at_collection_fails(tmp_path):
    """pytest says 5, no tests ran; with CI set that is a failure like any other skip."""
    done = run_pytest(tmp_path, {"module": SKIPS["a skipped module"]}, "true")
    assert done.returncode == 1, done.stdout + done.stderr


def test_without_ci_a_skip_is_only_a_skip(tmp_path):
    done = run_pytest(tmp_path, {"skip": SKIPS["a call to pytest.skip"]}, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CI is set" not in done.stdout


def test_with_ci_true_a_run_without_skips_passes_and_a_failure_stays_one(tmp_path):
    done = run_pytest(tmp_path, {"passes": PASSES, "xfail": XFAIL}, "true")
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "test_passes.py").write_text("def test_fails():\n    assert False\n")
    done = run_pytest(tmp_path, {"skip": SKIPS["a call to pytest.skip"]}, "true")
    assert done.returncode == 1 and "1 failed" in done.stdout and "CI is set: 1 skipped" in done.stdout, done.stdout


def test_with_ci_true_skips_in_xdist_workers_fail_the_run(tmp_path):
    done = run_pytest(tmp_path, {"skip": SKIPS["a call to pytest.skip"]}, "true", "-p", "xdist", "-n", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no nginx here" in done.stdout, done.stdout


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("yes", True), ("TRUE", True),
                                             ("0", False), ("false", False), ("False", False), ("", False), (None, False)])
def test_which_values_of_ci_count(value, expected):
    assert ci_is_set({} if value is None else {"CI": value}) is expected
