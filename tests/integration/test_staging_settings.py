"""Settings of the staging role that cannot work together are refused before the hub is asked anything."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from support.mshub import MsHub, make_repo
from support.playbook import ANSIBLE_PLAYBOOK, ansible_env

pytestmark = [pytest.mark.integration]


def test_a_lock_update_without_a_lock_file_is_refused(tmp_path):
    make_repo(tmp_path / "hub", "settings/Model", {"config.json": b"{}"})
    with MsHub(tmp_path / "hub") as hub:
        play_vars = {
            "ansible_python_interpreter": sys.executable,
            "modelseed_models": [{"name": "settings/Model"}],
            "modelseed_lock_update": "all",
            "staging_cache_dir": str(tmp_path / "cache"),
            "staging_bundle_dir": str(tmp_path / "bundle"),
            "staging_endpoint": hub.url,
            "staging_serve": False,
        }
        playbook = tmp_path / "staging.yml"
        playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "vars": play_vars,
                                             "roles": [{"role": "modelseed.fleet.staging"}]}], sort_keys=False))
        proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(playbook)], env=ansible_env(),
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode != 0, proc.stdout[-5000:]
        assert "no lock file is set: set staging_lock_file (modelseed_lock_file)" in proc.stdout, proc.stdout[-5000:]
        assert len(hub.log) == 0, "the hub was asked before the settings were checked"
        assert not (tmp_path / "cache").exists() and not (tmp_path / "bundle").exists()
