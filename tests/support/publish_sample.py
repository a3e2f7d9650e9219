"""Publish the sample model on a test hub's root and write the sha256 of each of its files, as JSON.

    python -m support.publish_sample --root DIR --expected FILE     # prints the model id

For molecule's create step (support.molecule_world): its verify step compares what the SDKs load on the nodes with FILE.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from .mshub import make_repo
from .sample_models import MODEL, model_files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m support.publish_sample", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="the hub's repository root")
    parser.add_argument("--expected", required=True, type=Path, help="where to write {path: sha256}")
    args = parser.parse_args(argv)
    files = model_files()
    make_repo(args.root, MODEL, files)
    args.expected.write_text(json.dumps({path: hashlib.sha256(data).hexdigest() for path, data in files.items()},
                                        indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(MODEL)


if __name__ == "__main__":
    main()
