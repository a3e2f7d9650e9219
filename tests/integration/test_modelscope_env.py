"""modelscope_env through ansible-playbook, on an image-like root of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.playbook import run_tasks
from support.table_play import Row, run_table, table_play

CACHE = "/var/cache/modelscope"


def env_task(root, **options):
    return {"modelseed.fleet.modelscope_env": {"variables": {"MODELSCOPE_CACHE": CACHE}, "root": str(root), **options}}


def image_root(path: Path) -> Path:
    (path / "etc/profile.d").mkdir(parents=True)
    (path / "etc/environment").write_text('PATH="/usr/local/bin:/usr/bin:/bin"\n')
    return path


@pytest.fixture
def root(tmp_path):
    return image_root(tmp_path)


def test_check_real_check_real(root):
    task = env_task(root, services=["vllm"])
    run = run_tasks([{**task, "check_mode": True}, task, {**task, "check_mode": True}, task])
    assert [r["changed"] for r in run.results] == [True, True, False, False], [r.get("msg") for r in run.results]
    assert (root / "etc/environment").read_text() == f'PATH="/usr/local/bin:/usr/bin:/bin"\nMODELSCOPE_CACHE={CACHE}\n'
    assert f"export MODELSCOPE_CACHE='{CACHE}'" in (root / "etc/profile.d/modelscope.sh").read_text()
    assert f'DefaultEnvironment="MODELSCOPE_CACHE={CACHE}"' in (root / "etc/systemd/system.conf.d/modelscope.conf").read_text()
    assert f'Environment="MODELSCOPE_CACHE={CACHE}"' in (root / "etc/systemd/system/vllm.service.d/modelscope.conf").read_text()
    assert run[1]["systemd_changed"] and not run[3]["systemd_changed"]


def test_diff_shows_the_change(root):
    run = run_tasks([env_task(root, targets=["environment"])], check=True, diff=True)
    (diff,) = run[0]["diff"]
    assert diff["before_header"].endswith("/etc/environment") and f"MODELSCOPE_CACHE={CACHE}" in diff["after"]
    assert not (root / "etc/profile.d/modelscope.sh").exists()


CONFLICTS = [("replace", CACHE), ("keep", "/root/.cache/modelscope")]


@pytest.fixture(scope="module")
def conflict_rows(tmp_path_factory) -> tuple[dict[str, Row], dict[str, Path]]:
    """Each conflict setting on a root of its own whose /etc/environment sets the variable twice, in one play."""
    roots = {conflict: image_root(tmp_path_factory.mktemp(f"conflict-{conflict}")) for conflict, _expect in CONFLICTS}
    for root in roots.values():
        (root / "etc/environment").write_text("MODELSCOPE_CACHE=/root/.cache/modelscope\nMODELSCOPE_CACHE=/dup\n")
    return run_table({conflict: env_task(root, conflict=conflict, targets=["environment"]) for conflict, root in roots.items()}), roots


@table_play("modelscope_env: conflicts")
@pytest.mark.parametrize("conflict, expect", CONFLICTS)
def test_conflicting_value_is_reported(conflict_rows, conflict, expect):
    rows, roots = conflict_rows
    result, root = rows[conflict].result, roots[conflict]
    assert result["conflicts"][0]["value"] == "/dup"  # the line pam_env applies last
    lines = (root / "etc/environment").read_text().splitlines()
    if conflict == "replace":
        assert lines == [f"MODELSCOPE_CACHE={expect}"]
    else:
        assert lines[0] == f"MODELSCOPE_CACHE={expect}" and not result["changed"]


def test_conflict_fail_changes_nothing(root):
    (root / "etc/profile.d/other.sh").write_text("export MODELSCOPE_CACHE=/elsewhere\n")
    result = run_tasks([env_task(root, conflict="fail")])[0]
    assert result["failed"] and "/etc/profile.d/other.sh" in result["msg"]
    assert not (root / "etc/profile.d/modelscope.sh").exists()


def test_absent_removes_what_it_wrote(root):
    run = run_tasks([env_task(root, services=["vllm"]), env_task(root, services=["vllm"], state="absent")])
    assert run[1]["changed"] and run[1]["systemd_changed"]
    assert (root / "etc/environment").read_text() == 'PATH="/usr/local/bin:/usr/bin:/bin"\n'
    assert not (root / "etc/profile.d/modelscope.sh").exists()


def test_bad_input(root):
    bad_unit = run_tasks([env_task(root, services=["../../etc/passwd"])])[0]
    assert bad_unit["failed"] and "not a systemd unit name" in bad_unit["msg"]
    bad_value = run_tasks([{"modelseed.fleet.modelscope_env": {"variables": {"MODELSCOPE_CACHE": "a\nb"}, "root": str(root)}}])[0]
    assert bad_value["failed"] and "newlines" in bad_value["msg"]
