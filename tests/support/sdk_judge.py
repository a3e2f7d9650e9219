"""Runs inside an SDK virtualenv: one snapshot_download, then what it returned, as one JSON line.

Usage: python sdk_judge.py '{"model_id": "o/n", "revision": null, "local_files_only": false, "login": false}'
With ``"file": "config.json"`` it calls model_file_download for that one file instead (as applications that
read a single file do); the result then also names the file's path. A revision of null is not passed at all,
so the SDK applies its own default. The result line starts with ``JUDGE `` because SDKs print to stdout too.
"""

import hashlib
import json
import os
import sys

# Python puts this script's directory first on sys.path: test helpers there named like standard modules
# would shadow them inside the SDK.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

MARK = "JUDGE "


def sha256(path):
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:  # e.g. metadata the runtime user may not read: the SDK's verdict still counts
        return f"unreadable: {exc.strerror}"
    return digest.hexdigest()


def describe(top):
    files = {}
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, top).replace(os.sep, "/")
            files[rel] = {"size": os.path.getsize(full), "sha256": sha256(full)}
    return files


def main():
    args = json.loads(sys.argv[1])
    try:
        if args.get("login"):
            # Before 1.23 the SDK ignores MODELSCOPE_API_TOKEN; up to 1.37 it turns it into a cookie for
            # domain "host:port", which never matches a hub on another port than 443. A login works for both.
            from modelscope.hub.api import HubApi

            HubApi().login(os.environ.pop("MODELSCOPE_API_TOKEN"))
        kwargs = {}
        if args.get("revision") is not None:
            kwargs["revision"] = args["revision"]
        if args.get("local_files_only"):
            kwargs["local_files_only"] = True
        if args.get("file"):
            from modelscope.hub.file_download import model_file_download

            file_path = str(model_file_download(args["model_id"], args["file"], **kwargs))
            path = file_path[: -len(args["file"])].rstrip("/") if file_path.endswith(args["file"]) else os.path.dirname(file_path)
        else:
            from modelscope.hub.snapshot_download import snapshot_download

            file_path = None
            path = str(snapshot_download(args["model_id"], **kwargs))
    except Exception as exc:  # reported, not raised: the caller asserts on it
        print(MARK + json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(MARK + json.dumps({"ok": True, "dir": path, "file_path": file_path, "files": describe(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
