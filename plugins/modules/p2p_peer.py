#!/usr/bin/python
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: p2p_peer
short_description: Run an aria2 BitTorrent peer that downloads a model tree and seeds it until told to stop
version_added: 0.1.0
description:
  - V(started) starts C(aria2c) in the background on the torrent made by M(modelseed.fleet.p2p_torrent). It downloads
    the tree into O(dest) (the files land in C(<dest>/<torrent name>/)) and then seeds it, until V(stopped) or
    O(deadline) seconds, whichever comes first, so that nothing keeps running when a play dies.
  - The peer is private to the swarm of its tracker (DHT, peer exchange and local peer discovery off) and binds
    every socket to O(address).
  - V(finished) waits until the download is complete (the files are all there and match the torrent's piece hashes).
    That is no verification of the model; check each file against the manifest's sha256 before it moves into the cache.
    V(started) with O(wait) starts the peer and waits in the same call.
  - V(stopped) stops the peer (SIGINT, which tells the tracker that the peer leaves, then SIGKILL after O(stop_timeout) seconds) and returns once it has gone.
    V(absent) stops it too, then removes O(dest) and the peer's state; without O(torrent) on the host only O(dest) goes.
  - Keeps its pid, log and markers in C(<state_dir>/<info hash>/). Uses only the Python standard library.
author:
  - modelseed.fleet team (@modelseed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode nothing is started or stopped; V(started) and V(stopped) report what they would change.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - C(aria2c) (the Debian package C(aria2)), 1.36 or newer.
options:
  state:
    description: What to do with the peer of O(torrent).
    type: str
    choices: [started, finished, stopped, absent]
    default: started
  torrent:
    description: The C(.torrent) file on the host.
    type: path
    required: true
  url:
    description:
      - Where to fetch O(torrent) from (http or https) before V(started) starts the peer; it replaces a file of other
        content. Not fetched in check mode.
    type: str
  url_timeout:
    description: Seconds the fetch of O(url) may take.
    type: int
    default: 30
  wait:
    description: With V(started), return only once the download is complete, as V(finished) does, within O(timeout).
    type: bool
    default: false
  dest:
    description:
      - Directory to download into; put it on the cache's file system, so that the files can be renamed or
        hard-linked into the cache. Needed for V(started) and V(absent).
    type: path
  state_dir:
    description: Where the peer's pid, log and markers go (one directory per info hash).
    type: path
    default: /var/lib/modelseed/p2p
  address:
    description: The host's own address; the peer listens and connects from it only. Needed for V(started).
    type: str
  port:
    description: TCP port the peer listens on; two peers on one host (two torrents at once) need two ports.
    type: int
    default: 6881
  seed:
    description:
      - V(true) when O(dest) already holds the complete tree (a seeder). Nothing is hashed at start; the files are served as they are.
    type: bool
    default: false
  seed_ratio:
    description:
      - Stop seeding once the peer has uploaded this many times what it holds (C(--seed-ratio)); V(0) seeds until
        stopped. On a staging seeder this bounds what the staging host sends, whatever the swarm does.
    type: float
    default: 0
  upload_limit:
    description: Most bytes per second the peer uploads, all peers together; V(0) for no limit.
    type: int
    default: 0
  web_seed_connections:
    description: Connections to each web seed of the torrent (C(--split)); fewer leave more of the work to the peers.
    type: int
    default: 1
  max_peers:
    description: Most peers the peer talks to at once; V(0) for no limit.
    type: int
    default: 55
  deadline:
    description: Seconds after which the peer stops by itself, whatever happens to the play.
    type: int
    default: 21600
  timeout:
    description: Seconds V(finished), or V(started) with O(wait), waits for the download.
    type: int
    default: 3600
  stop_timeout:
    description: Seconds V(stopped) waits after SIGINT before it kills the peer.
    type: int
    default: 20
seealso:
  - module: modelseed.fleet.p2p_torrent
'''

EXAMPLES = r'''
- name: Join the swarm
  modelseed.fleet.p2p_peer:
    torrent: /var/cache/modelscope/.incoming/models.torrent
    dest: /var/cache/modelscope/.incoming
    address: "{{ ansible_default_ipv4.address }}"

- name: Wait for the whole tree
  modelseed.fleet.p2p_peer:
    state: finished
    torrent: /var/cache/modelscope/.incoming/models.torrent
    timeout: 7200

- name: Fetch the torrent, join the swarm and wait for the whole tree, in one round trip
  modelseed.fleet.p2p_peer:
    url: http://staging.example.com:8080/p2p/bundle.torrent
    torrent: /var/cache/modelscope/.incoming/bundle.torrent
    dest: /var/cache/modelscope/.incoming
    address: "{{ ansible_default_ipv4.address }}"
    wait: true

- name: Stop seeding once the whole batch has its files
  modelseed.fleet.p2p_peer:
    state: stopped
    torrent: /var/cache/modelscope/.incoming/models.torrent

- name: Stop seeding and remove the downloaded tree
  modelseed.fleet.p2p_peer:
    state: absent
    torrent: /var/cache/modelscope/.incoming/models.torrent
    dest: /var/cache/modelscope/.incoming
'''

RETURN = r'''
info_hash:
  description: The torrent's info hash (hex); V(null) in check mode when O(torrent) does not exist yet.
  returned: always
  type: str
  sample: 3f1c0a5e2b7d4c9e8f6a1b2c3d4e5f60718293a4
pid:
  description: Process id of the running C(aria2c); V(0) when none runs.
  returned: always
  type: int
complete:
  description: Whether the download is complete.
  returned: always
  type: bool
peer_dir:
  description:
    - The peer's own directory under O(state_dir) (its pid, exit status, log, and the marker of a complete download).
    - M(modelseed.fleet.cache_install) waits on it with O(modelseed.fleet.cache_install#module:wait_for_peer).
  returned: when O(torrent) exists
  type: str
  sample: /var/lib/modelseed/p2p/3f1c0a5e2b7d4c9e8f6a1b2c3d4e5f60718293a4
tree:
  description: Where the tree is (C(<dest>/<torrent name>)), once known.
  returned: when O(state=started)
  type: str
exit_code:
  description: C(aria2c)'s exit status once it has ended (V(null) while it runs).
  returned: always
  type: int
'''

import os
import shutil
import signal
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

from ansible_collections.modelseed.fleet.plugins.module_utils._host.swarm_peer import (
    PeerError,
    exit_status,
    is_complete,
    log_tail,
    peer_file,
    running_pid,
    wait_complete,
)

HOOK = "#!/bin/sh\n# aria2 runs this once the torrent is complete and hash-checked: $1 GID, $2 files, $3 first file.\n: > {marker}\n"


def aria2_argv(aria2c, torrent, dest, run_dir, address, port, seed=False, upload_limit=0, web_seed_connections=1,
               max_peers=55, deadline=21600, seed_ratio=0.0):
    """The command line of one peer: private swarm only, bound to ``address``, seeding until stopped or ``deadline``."""
    argv = [
        aria2c, "--no-conf", "--quiet", "--console-log-level=warn",
        "--log=" + peer_file(run_dir, "aria2.log"), "--log-level=warn",
        "--dir=" + dest,
        # Only the tracker finds peers: no DHT, no peer exchange, no local discovery, sockets on this address alone.
        "--enable-dht=false", "--enable-dht6=false", "--enable-peer-exchange=false", "--bt-enable-lpd=false",
        "--interface=" + address, "--listen-port=%d" % port, "--bt-max-peers=%d" % max_peers,
        # Seed until told to stop (or up to a share ratio), and never past the deadline.
        "--seed-ratio=%s" % float(seed_ratio), "--stop=%d" % deadline,
        "--on-bt-download-complete=" + peer_file(run_dir, "on-complete"),
        # Web seed: few connections, pieces at random (nodes then fetch different pieces and trade them).
        "--split=%d" % web_seed_connections, "--max-connection-per-server=%d" % web_seed_connections,
        "--stream-piece-selector=random", "--uri-selector=inorder",
        "--max-overall-upload-limit=%d" % upload_limit,
        "--file-allocation=none", "--allow-overwrite=true", "--auto-file-renaming=false",
        # No write cache: each block goes straight to the page cache, one copy fewer (a 16-node swarm on 2 cores
        # spent about a tenth less CPU in aria2c without it).
        "--disk-cache=0",
        "--bt-tracker-connect-timeout=10", "--bt-tracker-timeout=10",
        "--summary-interval=0", "--enable-rpc=false", "--daemon=false",
    ]
    if ":" not in address:
        argv.append("--disable-ipv6=true")  # nothing to listen on there: the address is IPv4
    if seed:
        argv += ["--check-integrity=false", "--bt-seed-unverified=true"]
    else:
        # Resume: what an earlier run left is checked against the piece hashes, not fetched again.
        argv += ["--check-integrity=true", "--continue=true"]
    return argv + [torrent]


def torrent_facts(module, aria2c, torrent):
    """(info hash, the torrent's name) as aria2c reads them."""
    rc, out, err = module.run_command([aria2c, "--no-conf", "--show-files=true", torrent])
    if rc:
        module.fail_json(msg="aria2c cannot read %s: %s" % (torrent, (err or out).strip()))
    info_hash = name = None
    for line in out.splitlines():
        key, _sep, value = line.partition(":")
        if key.strip() == "Info Hash":
            info_hash = value.strip()
        elif key.strip() == "Name":
            name = value.strip()
    if not info_hash:
        module.fail_json(msg="aria2c printed no info hash for %s" % torrent)
    return info_hash, name


def shell_quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def write_file(path, text, mode=0o644):
    temp = path + ".tmp"
    with open(temp, "w") as handle:
        handle.write(text)
    os.chmod(temp, mode)
    os.rename(temp, path)


def supervise(argv, run_dir):
    """In a detached grandchild: run aria2c, keep its pid, and write its exit status when it ends."""
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    output = os.open(peer_file(run_dir, "output.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    # Ansible reads the module's stdout until it closes: the peer must hold none of its descriptors.
    os.dup2(null, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.closerange(3, 65536)
    status = 127
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        write_file(peer_file(run_dir, "pid"), "%d\n" % pid)
        status = os.waitpid(pid, 0)[1]
        status = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    finally:
        write_file(peer_file(run_dir, "exit"), "%d\n" % status)
        os._exit(0)


def start(module, aria2c, run_dir, info_hash, name):
    params = module.params
    for option in ("dest", "address"):
        if not params[option]:
            module.fail_json(msg="state=started needs %s" % option)
    result = {"info_hash": info_hash, "tree": os.path.join(params["dest"], name or ""), "peer_dir": run_dir, "exit_code": None}
    pid = running_pid(run_dir)
    complete = is_complete(run_dir)
    if pid or module.check_mode:
        return dict(changed=not pid, pid=pid, complete=complete and bool(pid), **result)
    if not os.path.isdir(params["dest"]):
        os.makedirs(params["dest"], 0o755)
    if not os.path.isdir(run_dir):
        os.makedirs(run_dir, 0o700)
    for marker in ("complete", "exit", "pid"):
        if os.path.exists(peer_file(run_dir, marker)):
            os.unlink(peer_file(run_dir, marker))
    write_file(peer_file(run_dir, "on-complete"), HOOK.format(marker=shell_quote(peer_file(run_dir, "complete"))), 0o700)
    argv = aria2_argv(aria2c, params["torrent"], params["dest"], run_dir, params["address"], params["port"], params["seed"],
                      params["upload_limit"], params["web_seed_connections"], params["max_peers"], params["deadline"],
                      params["seed_ratio"])
    child = os.fork()
    if child == 0:
        supervise(argv, run_dir)
    os.waitpid(child, 0)
    deadline = time.time() + 10
    while not pid and time.time() < deadline:
        if exit_status(run_dir) is not None:
            module.fail_json(msg="aria2c ended at once (exit %s): %s" % (exit_status(run_dir), log_tail(run_dir)), **result)
        time.sleep(0.05)
        pid = running_pid(run_dir)
    if not pid:
        module.fail_json(msg="aria2c did not start within 10 s", **result)
    return dict(changed=True, pid=pid, complete=False, **result)


def wait_finished(module, run_dir, info_hash):
    """Returns once the download is complete; fails when the peer ended before, or after ``timeout`` seconds."""
    try:
        wait_complete(run_dir, module.params["timeout"])
    except PeerError as exc:
        module.fail_json(msg=str(exc), info_hash=info_hash, peer_dir=run_dir, pid=running_pid(run_dir), complete=False,
                         exit_code=exit_status(run_dir))
    return dict(changed=False, info_hash=info_hash, pid=running_pid(run_dir), complete=True, exit_code=exit_status(run_dir))


def stop(module, run_dir, info_hash):
    pid = running_pid(run_dir)
    complete = is_complete(run_dir)
    if not pid or module.check_mode:
        return dict(changed=bool(pid), info_hash=info_hash, pid=pid, complete=complete, exit_code=exit_status(run_dir))
    # SIGINT is aria2's graceful halt: it tells the tracker it leaves. SIGTERM would skip that.
    os.kill(pid, signal.SIGINT)
    deadline = time.time() + module.params["stop_timeout"]
    while running_pid(run_dir) and time.time() < deadline:
        time.sleep(0.1)
    if running_pid(run_dir):
        os.kill(pid, signal.SIGKILL)
    # The supervisor writes the exit status once aria2c has been reaped.
    deadline = time.time() + 10
    while exit_status(run_dir) is None and time.time() < deadline:
        time.sleep(0.05)
    return dict(changed=True, info_hash=info_hash, pid=0, complete=complete, exit_code=exit_status(run_dir))


def remove(module, run_dir, result):
    """After stop: the peer's state and the download directory go; ``result`` says whether anything did."""
    for path in (run_dir, module.params["dest"]):
        if path and os.path.lexists(path):
            result["changed"] = True
            if not module.check_mode:
                shutil.rmtree(path)
    return result


def fetch_torrent(module):
    """Fetches ``url`` into ``torrent`` (atomically), unless the file there holds the same bytes already."""
    params = module.params
    try:
        body = open_url(params["url"], timeout=params["url_timeout"]).read()
    except Exception as exc:  # pylint: disable=broad-except  # urllib, http.client and ssl errors alike
        module.fail_json(msg="cannot fetch the torrent from %s: %s" % (params["url"], exc))
    try:
        with open(params["torrent"], "rb") as handle:
            if handle.read() == body:
                return False
    except OSError:
        pass
    directory = os.path.dirname(params["torrent"])
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    temp = params["torrent"] + ".tmp"
    with open(temp, "wb") as handle:
        handle.write(body)
    os.chmod(temp, 0o644)
    os.rename(temp, params["torrent"])
    return True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="started", choices=["started", "finished", "stopped", "absent"]),
            torrent=dict(type="path", required=True),
            url=dict(type="str"),
            url_timeout=dict(type="int", default=30),
            wait=dict(type="bool", default=False),
            dest=dict(type="path"),
            state_dir=dict(type="path", default="/var/lib/modelseed/p2p"),
            address=dict(type="str"),
            port=dict(type="int", default=6881),
            seed=dict(type="bool", default=False),
            seed_ratio=dict(type="float", default=0.0),
            upload_limit=dict(type="int", default=0),
            web_seed_connections=dict(type="int", default=1),
            max_peers=dict(type="int", default=55),
            deadline=dict(type="int", default=21600),
            timeout=dict(type="int", default=3600),
            stop_timeout=dict(type="int", default=20),
        ),
        required_if=[("state", "started", ("dest", "address")), ("state", "absent", ("dest",))],
        supports_check_mode=True,
    )
    params = module.params
    state = params["state"]
    fetched = False
    if params["url"] and state == "started" and not module.check_mode:
        fetched = fetch_torrent(module)
    if state == "absent" and not os.path.exists(params["torrent"]):
        # No torrent, so no peer was started from it: only the download directory may be left.
        module.exit_json(**remove(module, None, dict(changed=False, info_hash=None, pid=0, complete=False, exit_code=None)))
    aria2c = module.get_bin_path("aria2c", required=True)
    if module.check_mode and not os.path.exists(params["torrent"]):
        # The task that fetches the torrent did not run for real: say what would happen.
        module.exit_json(changed=state == "started", info_hash=None, pid=0, complete=False, exit_code=None,
                         msg="%s does not exist yet" % params["torrent"])
    info_hash, name = torrent_facts(module, aria2c, params["torrent"])
    run_dir = os.path.join(params["state_dir"], info_hash)
    if state == "started":
        result = start(module, aria2c, run_dir, info_hash, name)
        if params["wait"] and not module.check_mode:
            result.update(complete=wait_finished(module, run_dir, info_hash)["complete"])
        result["changed"] = result["changed"] or fetched
    elif state == "finished":
        result = wait_finished(module, run_dir, info_hash)
    elif state == "stopped":
        result = stop(module, run_dir, info_hash)
    else:
        result = remove(module, run_dir, stop(module, run_dir, info_hash))
    result["peer_dir"] = run_dir
    module.exit_json(**result)


if __name__ == "__main__":
    main()
