#!/usr/bin/python
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: cache_install
short_description: Verify a model bundle and install it atomically into a ModelScope cache
version_added: 0.1.0
description:
  - Installs the models of a bundle (C(manifest.json), C(SHA256SUMS) and one tar per model, as made by
    M(modelseed.fleet.cache_bundle)) into the cache root O(cache_dir), in the layout the node's C(modelscope) SDK
    reads, with the hidden metadata that makes the SDK treat each model as a complete cache hit.
  - The bundle is a directory on the node or an http(s) URL. C(manifest.json) is checked against C(SHA256SUMS)
    first; then each model's tar is read once, as a stream (a node never needs room for two copies of it).
    Every member is judged before it is written (only regular files and directories that the manifest lists,
    at safe relative paths, with the listed size, once each; no links, devices or FIFOs), hashed while it is
    written to a staging directory beside the cache and checked against the manifest's sha256; the whole tar's
    sha256 and size are checked at its end.
  - Nothing moves into place before every model of the bundle has passed every check. Then each model
    directory is swapped into place in one atomic step (C(renameat2) with C(RENAME_EXCHANGE) on Linux), so an
    SDK sees either the old or the new model, never a mix. A run killed at any point leaves the previous cache
    as it was; the next run cleans up and completes.
  - O(src) may also be a directory holding a bundle in tree form (M(modelseed.fleet.cache_bundle) with
    C(format=tree)), with the same C(manifest.json), a C(SHA256SUMS) that covers only it, and per model a directory
    C(<owner>--<name>--<revision>) with exactly the members its tar would hold. Nothing but regular files and
    directories of the manifest's names and sizes is accepted, and every file is checked against the manifest's
    sha256 before the model is swapped in, as for a tar. O(src_files) says how the files get into the cache.
    In check mode, which reads only the manifest, such a bundle may also be behind an http(s) URL, and so it may for a run
    that only brings installed models in line (SDK metadata, owners and modes, records, model-signing signatures, O(prune));
    a model that needs its files fails the task before anything changes.
  - A delta bundle (M(modelseed.fleet.cache_bundle) with C(base_manifest)) is recognised by its manifest. A model
    there that names a base is installed only on top of exactly that base, the model recorded in the target layout
    at the base's revision and commit, with every file the delta does not carry as it was verified (size, sha256 and
    modification time; re-hashed with O(verify=full)). The carried files are streamed and checked as in a full
    bundle, the others hard-linked from the base (copied and hashed where a link cannot be made), and the model is
    swapped in whole. A delta on another base, or on none, fails the task before anything changes, saying what the
    cache holds instead. A model already installed at the delta's commit needs no base. A directory without a record
    (a run killed while replacing it drops the record first) is taken as the base only when every file the delta
    takes from it has the manifest's sha256, hashed then.
  - A model's OpenSSF model-signing signature in the bundle (C(<owner>--<name>--<revision>.sig), written by
    M(modelseed.fleet.bundle_sign) with O(modelseed.fleet.bundle_sign#module:model_signing_key)) is put beside the installed
    model directory as C(<model directory>.sig), never in it, and is not checked here. A model installed or replaced from
    a bundle without one loses the one beside it; a model kept as installed gets the bundle's signature when the one
    beside it is missing or another (V(fix)), and keeps its own when the bundle has none.
  - The verified size, sha256 and modification time of every installed file are recorded under
    C(<cache_dir>/.modelseed/), so a second run with the same bundle decides from C(stat) alone, without reading
    file contents.
  - Uses only the Python standard library.
author:
  - modelseed.fleet team (@modelseed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - modelseed.fleet.layout
  - modelseed.fleet.sync
  - modelseed.fleet.transfer
attributes:
  check_mode:
    support: full
    details: Reads the manifest and the cache records, then reports the models it would install, replace or remove.
  diff_mode:
    support: full
    details: Shows the models (directory, id, revision and commit) before and after.
  platform:
    platforms: posix
options:
  src:
    description:
      - The bundle, a directory on the node holding C(manifest.json), C(SHA256SUMS) and the tars, or an
        C(http://) or C(https://) URL under which those files are published.
    type: str
    required: true
  cache_dir:
    description:
      - Cache root, the value C(MODELSCOPE_CACHE) has for the SDK that will read the models. Created if missing.
      - Defaults to C(MODELSCOPE_CACHE) in the environment of the module.
    type: path
  prune:
    description:
      - Also remove the models of the chosen layout that this collection recorded in the cache and that the
        bundle does not hold. Models without a record (put there by hand or by an SDK) are never touched.
    type: bool
    default: false
  verify:
    description:
      - V(quick) trusts an installed file whose size and modification time are those recorded when it was
        verified.
      - V(full) also re-hashes every installed file, and reinstalls each model with a file that differs.
    type: str
    default: quick
    choices: [quick, full]
  owner:
    description:
      - User (name or uid) that owns every installed file and directory, and the cache root.
      - Usually the runtime user, the one that loads the models, because SDKs up to 1.37 write into the cache when
        they load, even offline (see O(shared) for a cache that a group of users loads).
      - Defaults to the user the module runs as.
    type: str
  group:
    description:
      - Group (name or gid) of every installed file and directory, and of the cache root.
    type: str
  file_mode:
    description:
      - Mode of every file written for a model, as an octal string. That is its files, its SDK metadata (C(.msc),
        C(.mdl), C(.mv)), and its record and lock under C(<cache_dir>/.modelseed/). Never world-writable.
      - With O(shared), C(.mdl) and C(.mv) are group-writable as well; SDKs up to 1.37 rewrite them on every load.
        SDKs from 1.38 write nothing into a cache they load from.
    type: raw
    default: '0644'
  dir_mode:
    description:
      - Mode of every directory written for a model, as an octal string. That is the model directory and its
        subdirectories, the directories above it and above its layout links (C(models/<owner>), C(hub/<owner>)),
        and the state directories under C(<cache_dir>/.modelseed/). A new cache root gets it too. Never world-writable.
      - SDKs up to 1.37 need the user who loads a model to write its directory (C(.mdl)), and to create
        C(<cache_dir>/.lock) and C(<cache_dir>/models/._____temp) or C(<cache_dir>/hub/._____temp) (and for 1.15
        C(<cache_dir>/ast_indexer)), even offline. Either O(owner) is that user, or O(shared) lets its group write
        them. SDKs from 1.38 read a cache nobody but O(owner) can write.
    type: raw
    default: '0755'
  shared:
    description:
      - Make the cache usable by every member of O(group), not only O(owner). SDKs up to 1.37 write into the
        cache even when they load offline (C(.mdl) and C(.mv) in the model directory, C(<cache_dir>/.lock),
        C(<cache_dir>/models/._____temp), C(<cache_dir>/hub/._____temp), and for 1.15 C(<cache_dir>/ast_indexer)).
      - With V(true), the cache root and those scratch directories become group-writable and setgid, every
        installed directory setgid, and C(.mdl) and C(.mv) group-writable. Nothing becomes world-writable.
    type: bool
    default: false
  validate_certs:
    description:
      - Verify the TLS certificate of an https O(src). When false, every run warns.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file with the CA certificates to trust for an https O(src).
    type: path
  url_username:
    description:
      - User name for HTTP basic authentication to O(src). Sent only to the origin of O(src).
    type: str
  url_password:
    description:
      - Password for HTTP basic authentication to O(src).
    type: str
  src_files:
    description:
      - How the files of a tree-form bundle in O(src) get into the cache.
      - V(copy) copies each file into the model's staging directory, hashing it on the way; the tree stays as it is.
      - V(link) hard-links each file after it was hashed in place; the tree stays (a peer can keep seeding it) and
        costs no second copy. V(move) renames each file after it was hashed in place; the tree is consumed. With either,
        every file of a model is checked before the first one is linked or moved, and the staged name must be the
        very file that was hashed.
      - V(link) and V(move) need the tree on the cache's file system; elsewhere the task fails before it changes
        anything, saying so (use V(copy) there). With V(move), a file whose sha256 differs is deleted from the tree,
        so that the transport sends it again; the rest of a refused tree stays as it was. Files already moved when a
        run fails otherwise (a full disk, a kill) leave the tree with the discarded staging directory, and are sent
        again.
      - Anything but V(copy) with a tar bundle or a URL fails.
    type: str
    default: copy
    choices: [copy, link, move]
  proxy:
    description:
      - HTTP proxy for an http(s) O(src), as C(http://host:port) or C(http://user:password@host:port) (sent as
        C(Proxy-Authorization) basic credentials; the password is masked in every result, as O(url_password) is).
        A caching proxy such as squid, or Dragonfly's C(dfdaemon) proxy, then serves many nodes from one copy.
      - An C(http://) O(src) is asked of the proxy by its full URL, so that the proxy can cache the bundle; an
        C(https://) O(src) goes through the proxy with C(CONNECT), end to end encrypted, which no proxy can cache.
      - Not set, the environment of the module decides, C(http_proxy) for an C(http://) O(src), C(https_proxy) for an
        C(https://) one, C(no_proxy) for the hosts reached directly (their upper-case forms too). Set, it wins over
        the environment, C(no_proxy) included. V('') reaches O(src) directly, whatever the environment says.
    type: str
  workers:
    description:
      - Files hashed in parallel for O(verify=full), and for a tree's files with O(src_files=link) or O(src_files=move).
    type: int
    default: 4
  lock_timeout:
    description:
      - Seconds to wait for another run that is writing one of the same models.
    type: int
    default: 3600
  wait_for_peer:
    description:
      - The directory of the BitTorrent peer that is downloading the tree in O(src) (RV(modelseed.fleet.p2p_peer#module:peer_dir)).
        The task waits until the peer's download is complete, then installs; it fails, changing nothing, when the peer
        ends before, or after O(wait_timeout) seconds. So each node of a swarm installs as soon as its own download
        ends, while its peer keeps seeding the files (O(src_files=link)) for the others.
      - Not waited for in check mode.
    type: path
  wait_timeout:
    description:
      - Seconds to wait for the peer of O(wait_for_peer).
    type: int
    default: 3600
  trust:
    description:
      - Accept only a bundle whose C(manifest.json) is signed (C(manifest.json.sig) beside it, as
        M(modelseed.fleet.bundle_sign) writes it) by a signer this trust list names, for O(trust.namespace).
      - The manifest is read once and its signature verified before anything else of the bundle is read, and the
        bytes verified are the bytes used. The manifest names the sha256 of every tar and file, and every byte
        installed is checked against it, so a verified manifest vouches for everything installed.
      - An unsigned bundle, a bad signature, a signer the list does not name, a signature made for another
        namespace or a manifest changed after signing fails the task, and nothing on the host is changed.
      - Without it, signatures are neither needed nor looked at, and RV(signer) is null.
    type: dict
    suboptions:
      method:
        description:
          - V(ssh) verifies an OpenSSH signature with C(ssh-keygen -Y verify) (OpenSSH 8.1 or newer) against
            O(trust.allowed_signers); V(gpg) an OpenPGP one with C(gpgv) against O(trust.keyring).
        type: str
        choices: [ssh, gpg]
        default: ssh
      allowed_signers:
        description:
          - For V(ssh), an C(allowed_signers) file on the host (see C(ssh-keygen(1)), ALLOWED SIGNERS), one line per
            signer, for example C(release@example.com namespaces="modelseed-bundle" ssh-ed25519 AAAA...).
        type: path
      identities:
        description:
          - For V(ssh), the principals of O(trust.allowed_signers) whose signature is accepted (at least one).
          - For V(gpg), the primary key fingerprints accepted; empty accepts every key of O(trust.keyring).
        type: list
        elements: str
        default: []
      namespace:
        description:
          - The namespace the signature must have been made for (C(-n) of C(ssh-keygen -Y sign); for V(gpg) the
            notation C(namespace@modelseed.fleet)).
        type: str
        default: modelseed-bundle
      keyring:
        description:
          - For V(gpg), a keyring file on the host holding the public keys to trust (C(gpg --export KEY > FILE)).
        type: path
notes:
  - Free space is checked before anything is written (with O(src_files=link) or O(src_files=move), only for the
    metadata and records, as the files take no new room). The old copy of a model stays in place until the new
    one is verified, so a replacement needs room for both.
  - Any model directory of the chosen layout that the bundle holds is replaced as a whole, including files an
    SDK or a user added to it.
seealso:
  - module: modelseed.fleet.modelscope_model
  - module: modelseed.fleet.cache_info
'''

EXAMPLES = r'''
- name: Install a bundle copied to the node, for whatever SDK the serving venv has
  modelseed.fleet.cache_install:
    src: /srv/bundles/2024-06-qwen
    cache_dir: /var/cache/modelscope
    sdk_pythons: [/opt/vllm/bin/python]

- name: Install from the staging host over https, shared by the members of group "inference"
  modelseed.fleet.cache_install:
    src: https://staging.example.com/bundles/2024-06-qwen
    ca_path: /etc/pki/internal-ca.pem
    url_username: fleet
    url_password: "{{ bundle_password }}"
    cache_dir: /var/cache/modelscope
    layout: all
    owner: root
    group: inference
    shared: true

- name: Install a tree-form bundle that rsync put on the cache's file system, consuming it
  modelseed.fleet.cache_install:
    src: /var/cache/modelscope/.modelseed/push
    cache_dir: /var/cache/modelscope
    src_files: move

- name: Install only a bundle signed by the release key (ssh-keygen -Y sign -n modelseed-bundle)
  modelseed.fleet.cache_install:
    src: /srv/bundles/2024-06-qwen
    cache_dir: /var/cache/modelscope
    trust:
      allowed_signers: /etc/modelseed/allowed_signers
      identities: [release@example.com]

- name: Pull through the site's caching proxy, which serves every node after the first from its cache
  modelseed.fleet.cache_install:
    src: http://staging.example.com:8080/bundle/
    proxy: http://squid.example.com:3128
    cache_dir: /var/cache/modelscope

- name: Make the cache hold exactly the bundle's models, re-hashing what is installed
  modelseed.fleet.cache_install:
    src: /srv/bundles/2024-06-qwen
    cache_dir: /var/cache/modelscope
    layout: snapshots
    prune: true
    verify: full
'''

RETURN = r'''
cache_dir:
  description: Cache root.
  returned: always
  type: str
  sample: /var/cache/modelscope
layout:
  description: Layout written (after resolving V(auto)).
  returned: always
  type: str
  sample: all
sdk_generations:
  description: SDK version ranges that read the installed models as cache hits.
  returned: always
  type: list
  elements: str
  sample: ['1.15-1.22', '1.23-1.37', '>=1.38']
sdks_found:
  description: Interpreters with the C(modelscope) SDK found for O(layout=auto).
  returned: when O(layout=auto)
  type: list
  elements: dict
  sample: [{python: /opt/vllm/bin/python, version: 1.40.2}]
models:
  description:
    - The bundle's models and the models removed by O(prune), with what was done (or would be, in check mode).
    - C(action) is V(install) (was absent), V(replace) (differed), V(fix) (only metadata, links, ownership, modes,
      the model-signing signature beside the model or the record), V(none) or V(remove).
    - When the task fails, C(action) says what was done before the failure, not what was planned; the model
      whose tar was rejected (a member that failed a check, a wrong size or sha256) is V(refused), one that
      failed otherwise (a full disk, say) V(failed), and a model left as it was V(none).
  returned: always
  type: list
  elements: dict
  sample: [{id: Qwen/Qwen2.5-0.5B-Instruct, revision: master, layout: all, bytes: 988097824, action: install,
            path: /var/cache/modelscope/models/Qwen/Qwen2___5-0___5B-Instruct}]
bytes_installed:
  description:
    - Bytes of model files extracted into the cache, or copied, hard-linked or moved from a tree-form bundle
      (in check mode, that would be). Files a delta bundle takes from the installed base are not counted.
    - When the task fails, only the bytes of the models that were moved into place before the failure; V(0)
      when a rejected bundle left the cache as it was.
  returned: always
  type: int
  sample: 988097824
manifest_sha256:
  description: sha256 of the bundle's C(manifest.json).
  returned: when the bundle could be read
  type: str
  sample: 0c5b7e0f8a1c0bd3d5b6f4d3a2e1f0c9b8a7d6e5f4c3b2a1908f7e6d5c4b3a21
form:
  description: Form of the bundle, V(tar) (one tar per model) or V(tree) (a directory per model).
  returned: when the bundle could be read
  type: str
  sample: tree
signer:
  description:
    - Who signed the bundle's C(manifest.json), as verified against O(trust) (the identity and the key's
      fingerprint); null without O(trust).
  returned: when the bundle could be read
  type: str
  sample: release@example.com (ssh-ed25519 key SHA256:nnZOe3tf0u1DAkUxlcAYxruAv8WlxDYRfS5ayfCZBeM)
idle:
  description:
    - Whether there was nothing to do at all (in check mode, whether there would be), that is every model installed
      and recorded, nothing to fix or prune, and no pending install or trash that a killed run left in the cache.
    - A caller that planned in check mode can skip the run itself when it is V(true).
  returned: when the bundle could be read
  type: bool
  sample: true
msg:
  description: What changed and why, or why nothing did.
  returned: always
  type: str
  sample: "installed 1 model(s): Qwen/Qwen2.5-0.5B-Instruct@master (new to this cache); extracted 988097824 bytes"
'''

import base64
import errno
import grp
import os
import pwd
import re
from urllib.parse import unquote, urlsplit, urlunsplit

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.delta import carried_bytes
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.install import (
    Locks,
    ModelInstall,
    Perms,
    check_free_space,
    fix_runtime_dirs,
    runtime_dirs_to_fix,
)
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.reader import DirSource, UrlSource
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.signature import DEFAULT_NAMESPACE, METHODS, Trust
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tree_reader import SRC_FILES, open_bundle, refuse_remote_files
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import absolute, generations
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import (
    ModelState,
    empty_trash,
    has_leftovers,
    lock_path,
    pending_models,
    prepare_state_dirs,
    recorded_models,
    recover_pending,
)
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.locks import FileLock, LockTimeout
from ansible_collections.modelseed.fleet.plugins.module_utils._host.swarm_peer import PeerError, wait_complete
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpClient, HttpError
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.proxy import Proxy
from ansible_collections.modelseed.fleet.plugins.module_utils._module.args import (
    LAYOUT_ARG_SPEC,
    SYNC_ARG_SPEC,
    TRANSFER_ARG_SPEC,
    VERIFY_CHOICES,
    cache_root,
    choose_layout,
    warn_unverified,
)
from ansible_collections.modelseed.fleet.plugins.module_utils._module.failure import fail, failure

_OCTAL = re.compile(r'^0?[0-7]{3}\Z')
PAST = {'install': 'installed', 'replace': 'replaced', 'fix': 'fixed', 'remove': 'removed'}
VERB = {'extracted': 'extract', 'copied': 'copy', 'hard-linked': 'hard-link', 'moved': 'move'}


def create_module():
    argument_spec = dict(
        src=dict(type='str', required=True),
        cache_dir=dict(type='path'),
        prune=dict(type='bool', default=False),
        verify=dict(type='str', default='quick', choices=VERIFY_CHOICES),
        owner=dict(type='str'),
        group=dict(type='str'),
        file_mode=dict(type='raw', default='0644'),
        dir_mode=dict(type='raw', default='0755'),
        shared=dict(type='bool', default=False),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
        url_username=dict(type='str'),
        url_password=dict(type='str', no_log=True),
        proxy=dict(type='str', no_log=False),
        workers=dict(type='int', default=4),
        lock_timeout=dict(type='int', default=3600),
        wait_for_peer=dict(type='path'),
        wait_timeout=dict(type='int', default=3600),
        src_files=dict(type='str', default='copy', choices=list(SRC_FILES)),
        trust=dict(type='dict', options=dict(
            method=dict(type='str', default='ssh', choices=list(METHODS)),
            allowed_signers=dict(type='path'),
            identities=dict(type='list', elements='str', default=[]),
            namespace=dict(type='str', default=DEFAULT_NAMESPACE),
            keyring=dict(type='path'),
        )),
    )
    argument_spec.update(TRANSFER_ARG_SPEC)
    argument_spec.update(LAYOUT_ARG_SPEC)
    argument_spec.update(SYNC_ARG_SPEC)
    return AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                         required_if=[('shared', True, ('group',))],
                         required_together=[('url_username', 'url_password')])


def parse_mode(module, name, directory):
    value = module.params[name]
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and _OCTAL.match(value):
        mode = int(value, 8)
    else:
        module.fail_json(msg='%s must be an octal mode such as %s, got %r' % (name, '0755' if directory else '0644', value))
    needed = 0o500 if directory else 0o400
    if mode & ~0o777 or mode & 0o002 or mode & needed != needed:
        module.fail_json(msg='%s %s: modes must be readable%s by the owner, carry no special bits and never be world-writable' % (
            name, oct(mode), ' and searchable' if directory else ''))
    return mode


def lookup(module, kind, value):
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid if kind == 'owner' else grp.getgrnam(value).gr_gid
    except KeyError:
        pass
    module.fail_json(msg='%s %r does not exist on %s' % (kind, value, os.uname()[1]))


def split_credentials(url):
    """(url without user:password@, user, password); credentials never appear in messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    netloc = parts.hostname + (':%d' % parts.port if parts.port else '')
    if ':' in parts.hostname:
        netloc = '[%s]%s' % (parts.hostname, ':%d' % parts.port if parts.port else '')
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(parts.username or ''), unquote(parts.password or '')


def proxy_setting(module):
    """The proxy option, checked, with its password masked like url_password."""
    value = module.params['proxy']
    if not value:
        return value
    try:
        password = urlsplit(value if '://' in value else 'http://' + value).password
        if password:
            module.no_log_values.update((password, unquote(password)))
        Proxy(value)
    except ValueError as exc:
        module.fail_json(msg='proxy: %s' % exc)
    return value


def make_source(module):
    p = module.params
    src = p['src']
    if re.match(r'^https?://', src, re.I):
        in_url = urlsplit(src).password
        if in_url:
            # A password inside src is as secret as url_password: masked in every result, the invocation included.
            module.no_log_values.update((in_url, unquote(in_url)))
        src, user, password = split_credentials(src)
        warn_unverified(module, src)
        user, password = p['url_username'] or user, p['url_password'] or password
        headers = {}
        if user:
            token = base64.b64encode(('%s:%s' % (user, password or '')).encode('utf-8')).decode('ascii')
            headers['Authorization'] = 'Basic %s' % token
        client = HttpClient(timeout=p['timeout'], retries=p['retries'], backoff=p['retry_delay'], validate_certs=p['validate_certs'],
                            ca_path=p['ca_path'], auth_url=src, auth_headers=headers, proxy=proxy_setting(module))
        return UrlSource(src, client)
    if '://' in src:
        module.fail_json(msg='src %s: only a directory or an http(s) URL is supported' % split_credentials(src)[0])
    path = os.path.abspath(src)
    if not os.path.isdir(path):
        module.fail_json(msg='src %s is not a directory holding a bundle' % path)
    return DirSource(path)


def model_line(target_rel, facts):
    return '%s: %s@%s commit %s' % (target_rel, facts.get('model'), facts.get('revision'), str(facts.get('commit'))[:12])


def summarize(targets, prunes, runtime_fix, check_mode):
    """``installed 1, fixed 1 model(s): a/b@master (new to this cache); c/d@v1 (SDK metadata .mv missing or outdated)``."""
    counts = []
    verbs = (('install', 'install', 'installed'), ('replace', 'replace', 'replaced'), ('fix', 'fix', 'fixed'))
    for action, future, past in verbs:
        n = sum(1 for t in targets if t.plan.action == action)
        if n:
            counts.append('%s %d' % ('would %s' % future if check_mode else past, n))
    if prunes:
        counts.append('%s %d' % ('would remove' if check_mode else 'removed', len(prunes)))
    reasons = ['%s (%s)' % (t.label, ', '.join(t.plan.reasons)) for t in targets if t.plan.action != 'none']
    reasons.extend('%s@%s (not in the bundle, prune)' % (rec.data.get('model'), rec.data.get('revision')) for rel, rec in prunes)
    if runtime_fix:
        reasons.append('cache root, SDK scratch or state directories (%s) %s' % (
            ', '.join(rel or '.' for rel, mode in runtime_fix), 'to create or to give their owner and modes' if check_mode
            else 'created or given their owner and modes'))
    head = ', '.join(counts) + ' model(s)' if counts else 'models unchanged'
    return '%s: %s' % (head, '; '.join(reasons))


def what_changed(result):
    """For a failure message: which models the run changed before it failed, or that it changed none."""
    done = ['%s@%s %s' % (m['id'], m['revision'], PAST[m['action']]) for m in result['models'] if m['action'] in PAST]
    if done:
        return 'changed before the failure: %s' % ', '.join(done)
    return 'no model in the cache was changed' if result['models'] else ''


def run(module, bundle, root, layout, perms, targets, prunes, result):
    p = module.params
    for target in targets:
        target.decide(p['verify'], p['workers'], bundle.source)
    runtime_fix = runtime_dirs_to_fix(root, layout, perms)
    to_stage = [t for t in targets if t.plan.action in ('install', 'replace')]
    # Before anything is reported as changed: a bundle too large for the disk is refused as it is.
    existing = root
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    check_free_space(existing, [t.model for t in to_stage], bundle.copies)
    result['models'] = [dict(id=t.model['id'], revision=t.model['revision'], layout=layout, path=t.dir,
                             bytes=t.model['bytes'], action=t.plan.action) for t in targets]
    result['models'].extend(dict(id=rec.data.get('model'), revision=rec.data.get('revision'), layout=layout,
                                 path=absolute(root, rel), bytes=sum(f.get('size', 0) for f in rec.files.values()),
                                 action='remove') for rel, rec in prunes)
    result['bytes_installed'] = sum(carried_bytes(t.model) for t in to_stage)
    result['changed'] = bool(prunes or runtime_fix or any(t.plan.action != 'none' for t in targets))
    if module._diff:
        before, after = [], []
        for target in targets:
            installed = target.installed_facts()
            if installed:
                before.append(model_line(target.rel, installed))
            after.append(model_line(target.rel, target.facts()))
        before.extend(model_line(rel, rec.data) for rel, rec in prunes)
        result['diff'] = dict(before='\n'.join(sorted(before)) + '\n', after='\n'.join(sorted(after)) + '\n',
                              before_header='%s (models of layout %s)' % (root, layout), after_header=p['src'])
    if not result['changed']:
        result['msg'] = 'all %d model(s) of the bundle are installed in layout %s and recorded as verified' % (len(targets), layout)
        return
    summary = summarize(targets, prunes, runtime_fix, module.check_mode)
    if module.check_mode:
        result['msg'] = '%s; would %s %d bytes' % (summary, VERB[bundle.verb], result['bytes_installed'])
        return
    apply(bundle, root, layout, perms, targets, prunes, runtime_fix, result)
    result['msg'] = summary + ('; %s %d bytes' % (bundle.verb, result['bytes_installed']) if result['bytes_installed'] else '')


def apply(bundle, root, layout, perms, targets, prunes, runtime_fix, result):
    """Do what was planned. ``result`` says only what has landed at each moment, so a failure reports that
    (the model whose tar was rejected as V(refused), one that failed otherwise as V(failed)), never the plan."""
    entries = dict((id(t), entry) for t, entry in zip(targets, result['models']))
    removals = result['models'][len(targets):]
    planned = dict((id(t), t.plan.action) for t in targets)
    for entry in result['models']:
        entry['action'] = 'none'
    result.update(changed=False, bytes_installed=0)
    to_stage = [t for t in targets if t.plan.action in ('install', 'replace')]
    current = None
    try:
        try:
            # A tree is judged whole (and for link or move, hashed) before any file of it is staged.
            for current in to_stage:
                bundle.prepare(current.model, os.path.dirname(current.staging))
            for current in to_stage:
                current.stage(bundle)
        except BaseException:
            for target in to_stage:
                target.unstage()
            raise
        current = None
        fix_runtime_dirs(root, runtime_fix, perms)
        result['changed'] = bool(runtime_fix)
        for index, current in enumerate(to_stage):
            try:
                current.commit()
            except BaseException:
                for later in to_stage[index + 1:]:
                    later.unstage()
                raise
            entries[id(current)]['action'] = planned[id(current)]
            result.update(changed=True, bytes_installed=result['bytes_installed'] + carried_bytes(current.model))
        for current in targets:
            if current.plan.action == 'fix':
                current.fix()
                entries[id(current)]['action'] = 'fix'
                result['changed'] = True
        current = None
        for (_rel, rec), entry in zip(prunes, removals):
            ModelState(root, layout, rec.data['model'], rec.data['revision'], perms=perms).remove()
            entry['action'] = 'remove'
            result['changed'] = True
    except BaseException as exc:
        if current is not None:
            entries[id(current)]['action'] = 'refused' if isinstance(exc, BundleError) else 'failed'
        raise


def prepare_root(root, perms):
    if os.path.isdir(root):
        return
    parent = os.path.dirname(root)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755)
    os.mkdir(root, 0o700)
    perms.apply(root, perms.shared_dir if perms.shared else perms.dir)


def recover_others(root, skip):
    """Finish or clean what killed runs left for models outside this bundle, when nobody holds them."""
    for rel in pending_models(root):
        if rel in skip:
            continue
        try:
            with FileLock(lock_path(root, rel), 0):
                recover_pending(root, rel)
        except LockTimeout:
            continue


def main():
    module = create_module()
    p = module.params
    result = dict(changed=False, models=[], bytes_installed=0)
    if (p['workers'] < 1 or p['retries'] < 0 or p['retry_delay'] < 0 or p['timeout'] <= 0 or p['lock_timeout'] < 0
            or p['wait_timeout'] < 0):
        module.fail_json(msg='workers must be >= 1, retries >= 0, retry_delay >= 0, timeout > 0, lock_timeout >= 0 and '
                             'wait_timeout >= 0', **result)
    perms = Perms(uid=lookup(module, 'owner', p['owner']), gid=lookup(module, 'group', p['group']),
                  file_mode=parse_mode(module, 'file_mode', False), dir_mode=parse_mode(module, 'dir_mode', True),
                  shared=p['shared'])
    root = cache_root(module)
    layout = choose_layout(module, result)
    result.update(cache_dir=root, layout=layout, sdk_generations=generations(layout))
    if p['wait_for_peer'] and not module.check_mode:
        try:
            wait_complete(p['wait_for_peer'], p['wait_timeout'])
        except PeerError as exc:
            fail(module, exc, result, 'nothing was installed from %s' % p['src'])
    source = make_source(module)
    targets, error, leftovers = [], None, False
    try:
        trust = Trust(**p['trust']) if p['trust'] else None
        remote = isinstance(source, UrlSource)
        # A tree-form bundle over http(s) serves its manifest and signatures, which is all that a run that only brings
        # installed models in line reads.
        bundle = open_bundle(source, p['src_files'], p['workers'], trust, plan_only=module.check_mode or remote)
        result.update(manifest_sha256=bundle.manifest_sha256, form=bundle.form, signer=bundle.signer)
        targets = [ModelInstall(root, layout, model, p['sync'], perms) for model in bundle.models]
        if remote and bundle.form == 'tree' and not module.check_mode:
            needing = [t.label for t in targets if t.decide(p['verify'], p['workers']).action in ('install', 'replace')]
            if needing:  # before anything changes
                refuse_remote_files(source, needing)
        by_rel = {}
        for target in targets:
            if target.rel in by_rel:
                module.fail_json(msg='the bundle holds %s and %s, which layout %s puts in the same directory %s' % (
                    by_rel[target.rel], target.label, layout, target.rel), **result)
            by_rel[target.rel] = target.label
        prunes = [(rel, rec) for rel, rec in recorded_models(root, layout) if rel not in by_rel] if p['prune'] else []
        leftovers = has_leftovers(root)
        if module.check_mode:
            run(module, bundle, root, layout, perms, targets, prunes, result)
        else:
            prepare_root(root, perms)
            prepare_state_dirs(root, perms)
            recover_others(root, set(by_rel))
            locks = [t.lock_path for t in targets] + [lock_path(root, rel) for rel, rec in prunes]
            with Locks(locks, p['lock_timeout'], perms):
                empty_trash(root)
                for target in targets:
                    target.recover()
                if prunes:  # read again under the locks: only what is still recorded goes
                    locked = set(rel for rel, rec in prunes)
                    prunes = [(rel, rec) for rel, rec in recorded_models(root, layout) if rel in locked]
                run(module, bundle, root, layout, perms, targets, prunes, result)
    except HttpError as exc:
        error = failure(exc, 'cannot fetch the bundle from %s: %s' % (split_credentials(p['src'])[0], exc))
    except ModelseedError as exc:
        error = failure(exc)
    except OSError as exc:
        needed = sum(t.model['bytes'] for t in targets if t.plan is not None and t.plan.action in ('install', 'replace'))
        error = failure(exc, 'installing into %s failed: %s' % (root, describe_os_error(exc, root, needed)))
    finally:
        source.close()
    if error is not None:
        # Failed outside the except blocks: a wrong bundle or a full disk is the task's failure, not a crash,
        # and carries no traceback of the module into the output.
        fail(module, error, result, what_changed(result))
    if result.get('signer'):
        result['msg'] += '; manifest.json signed by %s' % result['signer']
    # What lets a caller that planned in check mode skip the run itself: the second module call of a push.
    result['idle'] = not result['changed'] and not leftovers
    module.exit_json(**result)


def describe_os_error(exc, root, needed):
    text = '%s%s' % (exc.strerror or exc, ': %s' % exc.filename if exc.filename else '')
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            st = os.statvfs(root)
            text += ' (%d bytes needed, %d bytes and %d inodes free now; the partial copy was removed)' % (
                needed, st.f_bavail * st.f_frsize, st.f_favail)
        except OSError:
            pass
    return text


if __name__ == '__main__':
    main()
