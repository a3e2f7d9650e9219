"""Copy stdin to a TCP address and its answers to stdout: an ssh ProxyCommand.

Run inside the controller namespace (``nsenter --net=...``), it lets ssh, and rsync over ssh, reach air-gapped
nodes from the host, where nothing routes to them:

    ProxyCommand=nsenter --net=/run/netns/<ctl> /usr/bin/python3 relay.py %h %p

Standard library only: nodes and hosts without netcat or socat run it too.
"""

import os
import selectors
import socket
import sys

CHUNK = 1 << 16


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def relay(sock, stdin, stdout):
    """Until the node closes the connection; ssh closing stdin only half-closes it."""
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ)
    selector.register(sock, selectors.EVENT_READ)
    while True:
        for key, _mask in selector.select():
            if key.fileobj is sock:
                data = sock.recv(CHUNK)
                if not data:
                    return
                write_all(stdout, data)
            else:
                data = os.read(stdin, CHUNK)
                if data:
                    sock.sendall(data)
                else:
                    selector.unregister(stdin)
                    sock.shutdown(socket.SHUT_WR)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: relay.py HOST PORT\n")
        return 2
    with socket.create_connection((argv[0], int(argv[1])), timeout=10) as sock:
        sock.settimeout(None)
        relay(sock, sys.stdin.fileno(), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
