"""Run a module file the way Ansible runs it on a host (its own process, arguments in a JSON file), without the
second or so that ansible-playbook takes to start: for tests that run a module many times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLLECTION = "modelseed.fleet."


def module_command(name: str, args: dict, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run module ``name`` with ``args``."""
    args_file = workdir / f"{name}-{uuid.uuid4().hex[:8]}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=str(REPO / ".build"))
    return [sys.executable, str(REPO / "plugins" / "modules" / f"{name}.py"), str(args_file)], env


def parse_result(proc: subprocess.CompletedProcess) -> dict:
    """The module's JSON result; a process that died (a negative return code is the signal) gets ``killed``."""
    if proc.returncode < 0:
        return {"failed": True, "killed": -proc.returncode, "msg": f"killed by signal {-proc.returncode}"}
    out = proc.stdout.strip()
    return json.loads(out[out.index("{"):]) if "{" in out else {"failed": True, "msg": proc.stderr}


def run_module(name: str, args: dict, workdir: Path, env: dict[str, str] | None = None, timeout: float = 300) -> dict:
    command, full_env = module_command(name, args, workdir)
    full_env.update(env or {})
    proc = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
    return parse_result(proc)


def module_of(task: dict) -> tuple[str, dict]:
    """The module name and arguments of a task of this collection, with ``check_mode`` and ``diff`` passed on as
    Ansible does."""
    key = next(key for key in task if key.startswith(COLLECTION))
    args = dict(task[key])
    if task.get("check_mode"):
        args["_ansible_check_mode"] = True
    if task.get("diff"):
        args["_ansible_diff"] = True
    return key[len(COLLECTION):], args


def run_modules(tasks: list[dict], workdir: Path, env: dict[str, str] | None = None) -> list[dict]:
    """``tasks`` (of this collection's modules) one after another, each as a module process; their results."""
    return [run_module(*module_of(task), workdir, env) for task in tasks]
