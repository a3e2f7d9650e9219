"""Make the collection importable as ``ansible_collections.modelseed.fleet`` and ``tests/`` as a root."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BUILD = REPO / ".build"
COLLECTION_LINK = BUILD / "ansible_collections" / "modelseed" / "fleet"

if not os.path.lexists(COLLECTION_LINK):
    COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
    try:
        COLLECTION_LINK.symlink_to(os.path.relpath(REPO, COLLECTION_LINK.parent), target_is_directory=True)
    except FileExistsError:  # another pytest worker made it first
        pass

for path in (str(BUILD), str(TESTS)):
    if path not in sys.path:
        sys.path.insert(0, path)

os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(BUILD))
