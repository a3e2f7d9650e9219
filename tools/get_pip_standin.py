"""Offline stand-in for the get-pip.py bootstrap script that ansible-test downloads.

ansible-test runs get-pip.py with pip install arguments (for example
``--disable-pip-version-check pip==24.2 --no-setuptools --no-wheel``) in a fresh
virtual environment. This script bootstraps pip from the standard library's
``ensurepip``, then installs the requested packages from the configured index.
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY_OPTIONS = {'--no-setuptools', '--no-wheel'}


def main() -> None:
    """Bootstrap pip, then install what the caller asked for."""
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    subprocess.run([sys.executable, '-m', 'ensurepip', '--default-pip'], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, '-m', 'pip', 'install', *args], check=True)


if __name__ == '__main__':
    main()
