#!/usr/bin/python
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: p2p_torrent
short_description: Make the private torrent of an exported model tree and whitelist it on the tracker
version_added: 0.1.0
description:
  - Makes a multi-file BitTorrent metainfo file (BEP 3) of every regular file under O(path), hidden and empty ones
    included, with the private flag (BEP 27), one tracker and the web seeds of O(web_seeds) (BEP 19), using the
    C(torf) library.
  - The torrent's name is the directory name of O(path); a web seed URL ending in C(/) must serve the tree at
    C(<url><name>/<file>).
  - Adds the torrent's info hash to the tracker's whitelist O(whitelist) (C(opentracker -w)), keeping the hashes
    already there.
  - With O(peers_dest), also writes the same torrent without its web seeds. Its info hash is the same (web seeds
    are outside the info dictionary), so peers that read it join the same swarm and take every piece from the
    other peers.
  - When the torrent in O(dest) already describes the same files with the same sizes, the same C(manifest.json)
    and signatures beside it (compared by sha256, since a bundle signed again with another key keeps its sizes), tracker, web seeds
    and piece size, nothing is hashed again.
author:
  - modelseed.fleet team (@modelseed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - torf >= 4.2 on the host that holds the tree (the staging host).
options:
  path:
    description: The exported tree (the files that nodes move into their caches, and its C(manifest.json)).
    type: path
    required: true
  dest:
    description: Where the C(.torrent) file goes.
    type: path
    required: true
  tracker:
    description: The tracker's announce URL, for example C(http://10.0.0.1:6969/announce).
    type: str
    required: true
  web_seeds:
    description: Web seed URLs (BEP 19); each one ending in C(/) serves the tree under C(<url><name>/).
    type: list
    elements: str
    default: []
  peers_dest:
    description:
      - Where the same torrent without web seeds goes, for the peers that are to take every piece from the other
        peers (see O(web_seeds)). Not written when unset.
    type: path
  whitelist:
    description: The tracker's whitelist file, one info hash (hex) per line; made when missing.
    type: path
  piece_size:
    description:
      - Bytes per piece, a power of two of at least 16 KiB. By default one that gives about 1000 pieces, between
        256 KiB and 16 MiB.
    type: int
seealso:
  - module: modelseed.fleet.p2p_peer
'''

EXAMPLES = r'''
- name: Make the swarm's torrent
  modelseed.fleet.p2p_torrent:
    path: /srv/modelseed/export/models
    dest: /srv/modelseed/export/models.torrent
    tracker: "http://{{ staging_address }}:6969/announce"
    web_seeds: ["http://{{ staging_address }}:8080/export/"]
    peers_dest: /srv/modelseed/export/models-peers.torrent
    whitelist: /var/lib/modelseed/opentracker/whitelist
  register: torrent
'''

RETURN = r'''
info_hash:
  description: The info hash (hex, lower case); V(null) in check mode when the torrent would be made anew.
  returned: always
  type: str
  sample: 3f1c0a5e2b7d4c9e8f6a1b2c3d4e5f60718293a4
name:
  description: The torrent's name (the tree's directory name).
  returned: always
  type: str
piece_size:
  description: Bytes per piece.
  returned: always
  type: int
pieces:
  description: Number of pieces.
  returned: always
  type: int
files:
  description: Number of files in the torrent.
  returned: always
  type: int
bytes:
  description: Bytes of all files.
  returned: always
  type: int
'''

import glob
import hashlib
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, read_bytes

try:
    import torf
except ImportError:
    TORF_IMPORT_ERROR = traceback.format_exc()
else:
    TORF_IMPORT_ERROR = None

MIN_PIECE = 256 << 10
MAX_PIECE = 16 << 20
TARGET_PIECES = 1000
MANIFEST = "manifest.json"
COMMENT = "modelseed manifest sha256 "
# The bundle's and the models' signatures beside the manifest: signed again, they may keep their sizes.
SIGNATURES = "*.sig"


def piece_size_for(total):
    """The power of two that cuts ``total`` bytes into about TARGET_PIECES pieces, within MIN_PIECE and MAX_PIECE:
    small pieces spread through a swarm sooner, and a thousand keep the torrent file small."""
    size = MIN_PIECE
    while size < MAX_PIECE and total > size * TARGET_PIECES:
        size *= 2
    return size


def tree_files(path):
    """[(relative path parts, size)] of every regular file under ``path``, sorted; links and devices are refused."""
    found = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            full = os.path.join(root, name)
            if os.path.islink(full) or not os.path.isfile(full):
                raise ValueError("%s is not a regular file: a torrent carries files only" % full)
            found.append((tuple(os.path.relpath(full, path).split(os.sep)), os.path.getsize(full)))
    return sorted(found)


def file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def comment_for(path):
    """``modelseed manifest sha256 <hex>`` (with `` signatures sha256 <hex>`` over the signature files beside the
    manifest, by name), or None without a manifest."""
    manifest = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest):
        return None
    comment = COMMENT + file_digest(manifest)
    signatures = sorted(glob.glob(os.path.join(glob.escape(path), SIGNATURES)))
    if signatures:
        names = hashlib.sha256()
        for signature in signatures:
            names.update(("%s %s\n" % (file_digest(signature), os.path.basename(signature))).encode("utf-8"))
        comment += " signatures sha256 " + names.hexdigest()
    return comment


def make_torrent(path, files, tracker, web_seeds, piece_size, comment):
    """A torf Torrent of exactly ``files``: torf's own walk leaves hidden and empty files out, and a model tree
    needs them (.gitattributes, an empty __init__.py)."""
    torrent = torf.Torrent(path=path, trackers=[tracker], webseeds=web_seeds or None, private=True, comment=comment,
                           created_by="modelseed.fleet", creation_date=None)
    torrent.metainfo["info"]["files"] = [{"length": size, "path": list(parts)} for parts, size in files]
    torrent.metainfo["info"].pop("length", None)
    torrent.metainfo["info"]["name"] = os.path.basename(os.path.normpath(path))
    torrent.piece_size = piece_size
    return torrent


def same_torrent(dest, files, tracker, web_seeds, piece_size, comment):
    """The torrent at ``dest`` when it already says what we would write, else None."""
    if comment is None or not os.path.isfile(dest):
        return None
    try:
        old = torf.Torrent.read(dest)
    except torf.TorfError:
        return None
    old_files = sorted((tuple(f.parts[1:]), f.size) for f in old.files)
    if (old_files, list(old.trackers.flat), list(old.webseeds), old.piece_size, old.comment, old.private) != \
            (files, [tracker], list(web_seeds), piece_size, comment, True):
        return None
    return old


def peers_only(torrent):
    """The bytes of ``torrent`` without its web seeds: the same info hash, so the same swarm."""
    copy = torrent.copy()
    copy.webseeds = None
    return copy.dump()


def ensure_listed(whitelist, info_hash, check_mode):
    """Add ``info_hash`` to the tracker's whitelist; True when the file changed."""
    lines = []
    if os.path.exists(whitelist):
        with open(whitelist) as handle:
            lines = [line.strip() for line in handle if line.strip()]
    if info_hash in (line.lower() for line in lines):
        return False
    if not check_mode:
        # 0644: opentracker reads it as an unprivileged user.
        atomic_write(whitelist, ("\n".join(lines + [info_hash]) + "\n").encode())
    return True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            tracker=dict(type="str", required=True),
            web_seeds=dict(type="list", elements="str", default=[]),
            whitelist=dict(type="path"),
            piece_size=dict(type="int"),
            peers_dest=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    if TORF_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("torf"), exception=TORF_IMPORT_ERROR)
    params = module.params
    path = os.path.normpath(params["path"])
    if not os.path.isdir(path):
        module.fail_json(msg="%s is not a directory" % path)
    try:
        files = tree_files(path)
    except (OSError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    total = sum(size for _parts, size in files)
    if not total:
        module.fail_json(msg="%s holds no bytes to share" % path)
    piece_size = params["piece_size"] or piece_size_for(total)
    if piece_size < 16 << 10 or piece_size & (piece_size - 1):
        module.fail_json(msg="piece_size must be a power of two of at least 16384, not %d" % piece_size)
    comment = comment_for(path)
    torrent = same_torrent(params["dest"], files, params["tracker"], params["web_seeds"], piece_size, comment)
    changed = torrent is None
    if torrent is None:
        torrent = make_torrent(path, files, params["tracker"], params["web_seeds"], piece_size, comment)
        if not module.check_mode:
            try:
                torrent.generate(threads=1)  # reading the disk is the bound; threads only compete for it
                atomic_write(params["dest"], torrent.dump())  # 0644, for the web server's workers
            except (torf.TorfError, OSError) as exc:
                module.fail_json(msg="cannot make the torrent of %s: %s" % (path, exc))
    if params["peers_dest"] and not (changed and module.check_mode):
        data = peers_only(torrent)
        if read_bytes(params["peers_dest"]) != data:
            changed = True
            if not module.check_mode:
                try:
                    atomic_write(params["peers_dest"], data)
                except OSError as exc:
                    module.fail_json(msg="cannot write %s: %s" % (params["peers_dest"], exc))
    info_hash = torrent.infohash.lower() if not module.check_mode or not changed else None
    if params["whitelist"] and info_hash:
        try:
            changed = ensure_listed(params["whitelist"], info_hash, module.check_mode) or changed
        except OSError as exc:
            module.fail_json(msg="cannot add %s to the whitelist %s: %s" % (info_hash, params["whitelist"], exc), info_hash=info_hash)
    module.exit_json(changed=changed, info_hash=info_hash, name=torrent.name, piece_size=piece_size, pieces=torrent.pieces,
                     files=len(files), bytes=total)


if __name__ == "__main__":
    main()
