"""make bench: every benchmark, each writing its own section of docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in ("download.py", "bundle_install.py"):
    subprocess.run([sys.executable, str(HERE / script), *sys.argv[1:]], check=True)
