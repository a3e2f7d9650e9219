"""docs/variables.md is generated from the roles' argument specs and defaults: it must be up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_variables_md_is_up_to_date():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "role_docs.py"), "--check"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_every_role_default_is_documented_and_prefixed():
    import yaml

    for role in ("staging", "node"):
        defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
        specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
        assert set(defaults) == set(specs), role
        assert all(name.startswith(role + "_") for name in defaults), role
