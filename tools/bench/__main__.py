"""make bench: every benchmark, each writing its own section of docs/benchmarks.md.

    python tools/bench [ARGS...]              every benchmark, each given ARGS
    python tools/bench NAME [ARGS...]         one of them: download, bundle_install, delta, fleet, fleet-scale, swarm
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("download", "bundle_install", "delta", "fleet", "fleet_scale", "swarm")

# Ctrl-C reaches the running benchmark too, which takes down what it made: wait for it rather than kill it
# (a handler, not SIG_IGN, which the benchmark would inherit).
signal.signal(signal.SIGINT, lambda signum, frame: None)
chosen = sys.argv[1].replace("-", "_") if len(sys.argv) > 1 else ""
names, args = ([chosen], sys.argv[2:]) if chosen in BENCHMARKS else (BENCHMARKS, sys.argv[1:])
for name in names:
    if code := subprocess.run([sys.executable, str(HERE / f"{name}.py"), *args], check=False).returncode:
        raise SystemExit(code)
