# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which modelscope SDK versions the Python interpreters of a serving stack carry."""

import os
import subprocess
import sys

# Reads package metadata only: importing modelscope itself takes seconds.
_PROBE = (
    "import importlib.metadata as m\n"
    "try:\n"
    "    print(m.version('modelscope'))\n"
    "except Exception:\n"
    "    print('')\n"
)


def sdk_version(python, timeout=30):
    """The modelscope version importable by ``python``, or None."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return None
    try:
        out = subprocess.run([python, '-c', _PROBE], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=timeout, check=False, env={'PATH': os.environ.get('PATH', '/usr/bin:/bin')})
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = out.stdout.decode('utf-8', 'replace').strip()
    return version or None


def find_sdks(pythons, include_self=True):
    """[{'python': path, 'version': 'x.y.z'}] for each interpreter that has the SDK."""
    candidates = ([sys.executable] if include_self else []) + list(pythons or [])
    found, seen = [], set()
    for python in candidates:
        real = os.path.abspath(python)  # not realpath: venvs link to one interpreter
        if real in seen:
            continue
        seen.add(real)
        version = sdk_version(python)
        if version:
            found.append({'python': python, 'version': version})
    return found
