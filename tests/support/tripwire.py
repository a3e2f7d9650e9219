"""A TCP listener that answers nobody and writes one line per connection: proof that no one called.

    python -m support.tripwire --host ADDRESS --log FILE     # prints the port once listening

Air-gapped nodes get its URL as their hub address (MODELSCOPE_ENDPOINT): an empty log after the
SDKs ran on them shows that offline loads never tried to reach a hub. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m support.tripwire", description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--log", required=True, type=Path)
    args = parser.parse_args(argv)
    args.log.touch()
    with socket.create_server((args.host, args.port)) as server:
        print(server.getsockname()[1], flush=True)
        while True:
            conn, peer = server.accept()
            with args.log.open("a", encoding="utf-8") as log:
                log.write(f"{time.time():.3f} {peer[0]}:{peer[1]}\n")
            conn.close()


if __name__ == "__main__":
    main()
