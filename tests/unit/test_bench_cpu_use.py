"""tools/bench/cpu_use: CPU time between two snapshots goes to the process that used it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))

import cpu_use  # noqa: E402  # tools/bench is no package


def test_a_busy_process_started_after_the_first_snapshot_is_counted_by_its_name():
    before = cpu_use.snapshot()
    # More than the 0.5 s looked for: the kernel counts whole clock ticks, and 0.5 s of process time may read as 49.
    burn = "import time\nend = time.process_time() + 0.7\nwhile time.process_time() < end: pass\ninput()\n"
    proc = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while cpu_use.process_ticks().get(proc.pid, ("", 0))[1] < 0.5 * cpu_use.TICK:
            assert time.monotonic() < deadline, "the busy process never used 0.5 s of CPU"
            time.sleep(0.05)
        name = cpu_use.process_ticks()[proc.pid][0]
        used = cpu_use.cpu_between(before, cpu_use.snapshot(), top=1000)
    finally:
        proc.communicate(b"\n", timeout=10)
    assert used["processes"][name] >= 0.5
    assert 0 < used["busy"] <= 1
    assert sum(used["seconds"].values()) > 0
