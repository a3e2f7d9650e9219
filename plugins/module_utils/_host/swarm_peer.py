# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state directory of one BitTorrent peer (aria2c) that p2p_peer started: what it holds and how to wait on it.

The directory holds ``pid`` (aria2c's), ``exit`` (its exit status, written once it has been reaped), ``aria2.log``
and ``complete`` (touched by aria2's completion hook once every piece is there and hash-checked). p2p_peer starts and
stops the peer; cache_install may wait on the same directory, so that a node installs as soon as its own download ends.
"""

import os
import time

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError

LOG_TAIL = 3000


class PeerError(ModelseedError):
    """The peer ended before its download was complete, or did not complete it in time."""


def peer_file(peer_dir, name):
    return os.path.join(peer_dir, name)


def read_int(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def exit_status(peer_dir):
    return read_int(peer_file(peer_dir, 'exit'))


def is_complete(peer_dir):
    return os.path.exists(peer_file(peer_dir, 'complete'))


def is_our_peer(pid, peer_dir):
    """The pid is an aria2c whose log is in ``peer_dir`` (a reused pid belongs to someone else)."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            args = handle.read().split(b'\0')
    except OSError:
        return False
    return os.path.basename(args[0]).startswith(b'aria2c') and ('--log=' + peer_file(peer_dir, 'aria2.log')).encode() in args


def running_pid(peer_dir):
    pid = read_int(peer_file(peer_dir, 'pid'))
    return pid if pid and is_our_peer(pid, peer_dir) else 0


def log_tail(peer_dir):
    try:
        with open(peer_file(peer_dir, 'aria2.log'), 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - LOG_TAIL))
            return handle.read().decode('utf-8', 'replace')
    except OSError:
        return ''


def wait_complete(peer_dir, timeout, interval=0.2):
    """Returns once the peer's download is complete; raises PeerError when the peer ended before, or after ``timeout``."""
    deadline = time.time() + timeout
    while not is_complete(peer_dir):
        status = exit_status(peer_dir)
        if status is not None or not os.path.isdir(peer_dir):
            raise PeerError('the peer ended before the download was complete (exit %s): %s' % (status, log_tail(peer_dir)))
        if time.time() > deadline:
            raise PeerError('the download was not complete after %d s: %s' % (timeout, log_tail(peer_dir)))
        time.sleep(interval)
