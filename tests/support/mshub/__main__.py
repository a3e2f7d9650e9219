"""Run the test hub in the foreground: ``python -m support.mshub --root DIR``.

Prints the URL once listening, serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal

from .server import DEFAULT_REDIRECT_THRESHOLD, MsHub


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m support.mshub", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="directory of <owner>/<name> repositories")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--token", default=os.environ.get("MSHUB_TOKEN"), help="require this token (default: $MSHUB_TOKEN)")
    parser.add_argument("--redirect-threshold", type=int, default=DEFAULT_REDIRECT_THRESHOLD, help="redirect larger files; -1 never")
    parser.add_argument("--log", help="append one JSON line per request to this file")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")

    # Block the signals before the server threads start, so that only sigwait below receives them.
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    hub = MsHub(
        args.root,
        host=args.host,
        port=args.port,
        token=args.token,
        tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
        redirect_threshold=None if args.redirect_threshold < 0 else args.redirect_threshold,
        log_file=args.log,
    ).start()
    print(hub.url, flush=True)
    signal.sigwait(stop)
    hub.stop()


if __name__ == "__main__":
    main()
