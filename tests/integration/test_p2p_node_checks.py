"""The node role's p2p transport on a host without aria2c: it fails before anything is written, naming the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.playbook import ansible_env, playbook_command

pytestmark = [pytest.mark.integration]


def test_a_node_without_aria2_fails_naming_the_package(tmp_path: Path):
    # A PATH with every program of this machine but aria2c, which is installed here.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in Path("/usr/bin").iterdir():
        if program.name != "aria2c":
            (bin_dir / program.name).symlink_to(program)
    cache = tmp_path / "cache"
    playbook = tmp_path / "p2p.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable, "node_cache_dir": str(cache),
                 "node_p2p_torrent_url": "http://127.0.0.1:9/p2p/bundle.torrent", "node_pull_staging_url": "http://127.0.0.1:9/bundle/"},
        "tasks": [{"ansible.builtin.include_role": {"name": "modelseed.fleet.node", "tasks_from": "p2p.yml"}}]}]))
    proc = subprocess.run(playbook_command(playbook), env=ansible_env(PATH=str(bin_dir)), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "p2p transport runs aria2c on the nodes, and localhost has none: install the package aria2 there" in " ".join(proc.stdout.split())
    assert not cache.exists()
