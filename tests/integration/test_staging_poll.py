"""The staging role's progress poll: a download that ends is noticed when it ends, not when the next report is due.

The staging role runs on localhost against the test hub, with a report interval far longer than the download (the
weights are throttled so that the first wait has a download to wait for). Each round of the poll waits until either a
report is due or the job's status file says it ended, and says which; the last round must have ended the second way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from support.playbook import ANSIBLE_PLAYBOOK, ansible_env
from support.sample_models import MODEL, model_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Far longer than the download: a wait that ran to its timeout would hold the run this long, then fail the test.
POLL_INTERVAL = 120
POLL_TASK = "Wait until a download ends or the next report is due, then check the download jobs"


def staging_play(tmp_path: Path, hub_url: str) -> Path:
    play = [{
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {
            "ansible_python_interpreter": sys.executable,
            "staging_models": [{"name": MODEL}],
            "staging_cache_dir": str(tmp_path / "cache"),
            "staging_bundle_dir": str(tmp_path / "bundle"),
            "staging_http_state_dir": str(tmp_path / "http"),
            "staging_endpoint": hub_url,
            "staging_serve": False,
            "staging_poll_interval": POLL_INTERVAL,
        },
        "roles": [{"role": "modelseed.fleet.staging"}],
    }]
    path = tmp_path / "staging.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    return path


# Every task result as one JSON line (ansible-core alone has no json callback).
RECORDER = textwrap.dedent("""
    import json
    import os

    from ansible.plugins.callback import CallbackBase


    class CallbackModule(CallbackBase):
        CALLBACK_VERSION = 2.0
        CALLBACK_TYPE = "aggregate"
        CALLBACK_NAME = "task_results"
        CALLBACK_NEEDS_ENABLED = True

        def _record(self, result):
            with open(os.environ["TASK_RESULTS"], "a", encoding="utf-8") as out:
                out.write(json.dumps({"task": result._task.get_name(), "result": result._result}, default=str) + "\\n")

        v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_skipped = _record
""")


def run_recorded(playbook: Path, workdir: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run ``playbook`` on localhost; return the process and every task result, in the order they came."""
    (workdir / "callbacks").mkdir()
    (workdir / "callbacks" / "task_results.py").write_text(RECORDER)
    results = workdir / "results.jsonl"
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(playbook)],
                          env=ansible_env(ANSIBLE_CALLBACK_PLUGINS=str(workdir / "callbacks"), ANSIBLE_CALLBACKS_ENABLED="task_results",
                                          TASK_RESULTS=str(results)),
                          capture_output=True, text=True, timeout=POLL_INTERVAL + 300, check=False)
    return proc, [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []


def task_results(records: list[dict], name: str) -> list[dict]:
    """Every result of the task called ``name``, in the order the tasks ran."""
    return [record["result"] for record in records if record["task"].split(" : ")[-1] == name]


def test_the_wait_ends_when_the_download_does(hub, tmp_path):
    # About 6 s for the larger weights file at 512 KiB/s: the download outlasts the start of the first wait.
    hub.faults.add(action="throttle", path="/oss/", file="weights/*", rate=512 << 10, times=2)
    proc, records = run_recorded(staging_play(tmp_path, hub.url), tmp_path)
    assert proc.returncode == 0, f"{proc.stdout[-20000:]}\n{proc.stderr[-5000:]}"

    rounds = [result for result in task_results(records, POLL_TASK) if "skip_reason" not in result]
    assert rounds, "the download ended before the first report: nothing was waited for"
    # One round, whose wait ended on the job's end (its first line), not on the report being due; then the job's
    # result, read from its status file, and "--" before the progress files (none left: the download ended).
    assert len(rounds) == 1, rounds
    ended, *jobs, progress_mark = rounds[0]["stdout_lines"]
    assert progress_mark == "--", rounds[0]
    assert ended == "ended", rounds[0]
    assert [json.loads(line).get("changed") for line in jobs] == [True], jobs
    # The bundle was built after the wait: in tree form (the staging role's default with push), the model's files.
    tree = tmp_path / "bundle" / "Qwen--Qwen2.5-0.5B-Test--master"
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() and p.name not in (".msc", ".mdl", ".mv")) == sorted(
        model_files()), sorted(tree.rglob("*"))
