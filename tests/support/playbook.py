"""Run collection tasks through the real ``ansible-playbook`` and read back every task's result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".build"
# The interpreter running pytest has ansible-core; ansible-playbook sits beside it.
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
CALLBACKS = Path(__file__).resolve().with_name("callbacks")
RESULTS_STAT = "modelseed_play_results"  # callbacks/play_results.py writes this stat to its file


@dataclass
class PlaybookRun:
    rc: int
    results: list[dict]
    stdout: str
    stderr: str

    def __getitem__(self, index: int) -> dict:
        return self.results[index]


def ansible_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_DEPRECATION_WARNINGS="false",
    )
    env.update(extra)
    return env


def results_task(count: int, path: Path) -> dict:
    """The last task of a play whose tasks registered ``step_0`` ... : it saves their results to ``path`` as JSON.

    ``set_stats`` hands them to the play_results callback (``results_env`` enables it) on the controller, so saving
    starts no module."""
    names = ", ".join(f"'step_{i}': step_{i}" for i in range(count))
    data = {RESULTS_STAT: {"path": str(path), "results": "{{ {%s} | to_json }}" % names}}
    # no_log: the output shows each task's own result already, not this copy of them all.
    return {"name": "Save results", "check_mode": False, "no_log": True,
            "ansible.builtin.set_stats": {"data": data, "per_host": False, "aggregate": False}}


def results_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the play_results callback enabled beside any callbacks it enables already."""
    plugins = [str(CALLBACKS), *filter(None, env.get("ANSIBLE_CALLBACK_PLUGINS", "").split(os.pathsep))]
    enabled = [*filter(None, env.get("ANSIBLE_CALLBACKS_ENABLED", "").split(",")), "play_results"]
    return {**env, "ANSIBLE_CALLBACK_PLUGINS": os.pathsep.join(plugins), "ANSIBLE_CALLBACKS_ENABLED": ",".join(enabled)}


def write_playbook(tasks: list[dict], path: Path) -> Path:
    """A play on localhost, run by the interpreter that runs the tests."""
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks,
             "vars": {"ansible_python_interpreter": sys.executable}}]
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    return path


def playbook_command(playbook: Path, *, check: bool = False, diff: bool = False, verbosity: int = 0) -> list[str]:
    cmd = [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(playbook)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    return cmd


def run_tasks(tasks: list[dict], *, check: bool = False, diff: bool = False, env: dict[str, str] | None = None, verbosity: int = 0,
              workdir: Path | None = None, timeout: float = 900) -> PlaybookRun:
    """Run ``tasks`` on localhost, each registered and allowed to fail; return their results in order.

    The playbook and its results go to ``workdir``, or to a temporary directory removed afterwards."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="playbook-") as scratch:
            return run_tasks(tasks, check=check, diff=diff, env=env, verbosity=verbosity, workdir=Path(scratch), timeout=timeout)
    workdir = Path(workdir)
    results_file = workdir / "results.json"
    play_tasks = [{**task, "register": f"step_{i}", "ignore_errors": True} for i, task in enumerate(tasks)]
    play_tasks.append(results_task(len(tasks), results_file))
    cmd = playbook_command(write_playbook(play_tasks, workdir / "playbook.yml"), check=check, diff=diff, verbosity=verbosity)
    proc = subprocess.run(cmd, env=results_env(ansible_env(**(env or {}))), capture_output=True, text=True, timeout=timeout, check=False)
    if not results_file.exists():
        raise AssertionError(f"ansible-playbook failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    saved = json.loads(results_file.read_text())
    return PlaybookRun(proc.returncode, [saved[f"step_{i}"] for i in range(len(tasks))], proc.stdout, proc.stderr)
