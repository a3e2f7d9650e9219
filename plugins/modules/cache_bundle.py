#!/usr/bin/python
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: cache_bundle
short_description: Pack models of a ModelScope cache into a verifiable bundle for offline nodes
version_added: 0.1.0
description:
  - Writes a bundle directory O(dest) on the staging host, for M(modelseed.fleet.cache_install) to put on
    the nodes. It holds one uncompressed tar per model (C(<owner>--<name>--<revision>.tar)), a C(manifest.json)
    listing every model, revision, commit and file with its size and sha256, and a C(SHA256SUMS) file that
    C(sha256sum -c) checks anywhere, offline.
  - Each tar holds the model's files at their repository paths, whatever layout the cache used, plus the SDK
    metadata (C(.msc), C(.mdl), C(.mv)) generated from the manifest. Members are sorted, owned by 0:0, with
    modes 0755/0644 and the commit's time as modification time, so the same files at the same commit always
    give the same bytes.
  - Only models that M(modelseed.fleet.modelscope_model) downloaded or adopted can be bundled, because the file
    hashes come from the record it wrote when it verified them (under C(<cache_dir>/.modelseed/)). The weights
    are then read only once, to be copied into the tar, while the tar's own sha256 is computed on the way.
  - A model's tar is rewritten only when its files or commit changed; when nothing changed, the module reads
    no tar and reports no change.
  - The new tars, C(manifest.json) and C(SHA256SUMS) are written and synced in a new directory beside O(dest),
    which gets hard links to the tars that did not change, and the two directories are swapped in one step
    (C(renameat2) with C(RENAME_EXCHANGE) on Linux), so that a reader, or a run killed at any moment, finds the
    whole previous bundle or the whole new one. Where O(dest) cannot be swapped (its parent is not writable, it is a
    mount point or a symlink, it has subdirectories), the new files are renamed into it one after another once
    all of them are written. A failure while reading the cache or writing a tar (a file changed, a full disk)
    leaves the previous bundle untouched.
  - With O(format=tree) the bundle holds, instead of each tar, a directory C(<owner>--<name>--<revision>) with
    exactly the members the tar would hold, for transports that move files rather than one stream (rsync,
    BitTorrent) and for M(modelseed.fleet.cache_install) to move or hard-link into the cache. The manifest is the
    same (the tar is streamed through its hash, never stored); C(SHA256SUMS) covers C(manifest.json) only, whose
    entries carry the sha256 of every file. A model file is hard-linked from O(cache_dir) when both are on one
    file system and the file has mode 0644 (it then keeps the modification time it has in the cache, which must not
    change under the cache's record), else copied with mode 0644 and the commit's time. Each model directory is
    built beside its place and swapped in whole; C(manifest.json) and C(SHA256SUMS) follow.
  - With O(base_manifest), the bundle is a delta against the bundle whose C(manifest.json) that is (the one the other
    side installed). For each model the base holds, the tar (or tree directory) carries only the files whose size or
    sha256 differs from the base's, and the SDK metadata; its manifest entry still lists every file, and names the
    base revision, commit and the files taken from it. M(modelseed.fleet.cache_install) applies such a model only on
    top of exactly that base. Models the base does not hold travel whole.
  - Uses only the Python standard library.
author:
  - modelseed.fleet team (@modelseed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports which tars would be written, with their exact sizes, and writes nothing.
  diff_mode:
    support: full
    details: Shows the models and commits of the bundle before and after.
  platform:
    platforms: posix
options:
  cache_dir:
    description:
      - Cache root to read the models from, the value of C(MODELSCOPE_CACHE) for the SDK that uses it.
      - Defaults to C(MODELSCOPE_CACHE) in the environment of the module.
    type: path
  dest:
    description:
      - Bundle directory, created when missing. The module owns it; keep other files out of it.
    type: path
    required: true
  models:
    description:
      - Models to bundle.
      - When empty, every model of O(cache_dir) that has a verification record and is complete; others found
        there are reported as warnings.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - Model id, C(owner/name).
        type: str
        required: true
        aliases: [model_id]
      revision:
        description:
          - Revision the model was downloaded for with M(modelseed.fleet.modelscope_model) (its O(modelseed.fleet.modelscope_model#module:revision)).
        type: str
        default: master
  layout:
    description:
      - Which model directory of the cache to read each model from.
      - V(auto) takes the directory that has a verification record for the model at that revision, trying
        C(models/<owner>/<escaped name>) (the V(models) and V(all) layouts) first, then the V(snapshots) directory,
        then V(hub).
      - An explicit layout reads only that layout's directory. The tar does not depend on the layout read.
    type: str
    default: auto
    choices: [auto, all, models, snapshots, hub]
  verify:
    description:
      - V(none) trusts the record written when each file was verified against the hub, and only checks that every
        file still has the size and modification time it had then; a file changed since fails the task.
      - V(full) re-hashes every file of every bundled model against its recorded sha256 (while it is copied into the
        tar, for tars being written) and fails on any difference. Files changed on disk but still identical pass.
    type: str
    default: none
    choices: [none, full]
  format:
    description:
      - V(tar) writes one tar per model; V(tree) one directory per model (see above).
      - Switching a bundle from one form to the other rewrites every model in the new form and, with O(prune), removes
        the old form's tars or directories.
    type: str
    default: tar
    choices: [tar, tree]
  prune:
    description:
      - Remove C(.tar) files and model directories in O(dest) that the new manifest does not list in O(format),
        such as models no longer bundled.
    type: bool
    default: true
  base_manifest:
    description:
      - Path of the C(manifest.json) of a bundle the nodes already installed (kept from when it was written, or
        fetched from where a node installed it). The bundle written is then a delta against it (see above).
      - The base manifest's sha256 is written into the new manifest as C(base_manifest_sha256). A base holding
        several revisions of a model and not the one bundled fails the task, as it does not say which is installed.
      - It must not be in O(dest), whose C(manifest.json) this module rewrites.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for another run writing the same O(dest).
      - Runs that write O(dest) take a lock on the file C(.<name>.lock) beside it (in the temporary directory, when
        the parent of O(dest) is not writable), never inside O(dest). The bundle directory holds only the bundle,
        and can be served as it is by any static file server.
    type: int
    default: 3600
notes:
  - Links inside a model directory and files no record lists are never bundled.
seealso:
  - module: modelseed.fleet.modelscope_model
  - module: modelseed.fleet.cache_info
'''

EXAMPLES = r'''
- name: Download the models on the staging host
  modelseed.fleet.modelscope_model:
    name: "{{ item }}"
    cache_dir: /srv/modelscope
    layout: all
  loop: [Qwen/Qwen2.5-0.5B-Instruct, Qwen/Qwen2.5-7B-Instruct]

- name: Bundle them for the fleet
  modelseed.fleet.cache_bundle:
    cache_dir: /srv/modelscope
    dest: /srv/bundles/models
    models:
      - name: Qwen/Qwen2.5-0.5B-Instruct
      - name: Qwen/Qwen2.5-7B-Instruct
        revision: v1.0
  register: bundle

- name: Bundle only what changed since the bundle the air-gapped site installed last
  modelseed.fleet.cache_bundle:
    cache_dir: /srv/modelscope
    dest: /srv/bundles/delta
    base_manifest: /srv/bundles/installed/manifest.json

- name: Bundle every complete model of the cache, re-hashing each file first
  modelseed.fleet.cache_bundle:
    cache_dir: /srv/modelscope
    dest: /mnt/usb/bundle
    verify: full
'''

RETURN = r'''
dest:
  description: Bundle directory.
  returned: always
  type: str
  sample: /srv/bundles/models
manifest:
  description: Path of the bundle's C(manifest.json).
  returned: always
  type: str
  sample: /srv/bundles/models/manifest.json
models:
  description: One entry per model of the bundle, sorted by id and revision.
  returned: success
  type: list
  elements: dict
  contains:
    id:
      description: Model id.
      type: str
      sample: Qwen/Qwen2.5-0.5B-Instruct
    revision:
      description: Revision.
      type: str
      sample: master
    commit:
      description: Commit the files are at.
      type: str
      sample: 5a1d6b0c3a5e4f4b9d4a8e0e1f2c3b4a5d6e7f80
    source_layout:
      description: Layout of the cache directory the model was read from.
      type: str
      sample: all
    source:
      description: Directory the model was read from.
      type: str
      sample: /srv/modelscope/models/Qwen/Qwen2___5-0___5B-Instruct
    tar:
      description: File name of the model's tar in O(dest) (with O(format=tree), the tar the directory stands for).
      type: str
      sample: Qwen--Qwen2.5-0.5B-Instruct--master.tar
    tar_size:
      description: Size of the tar (exact, also in check mode).
      type: int
      sample: 988119040
    tar_sha256:
      description: sha256 of the tar; null in check mode for a tar that would be written.
      type: str
      sample: 0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0
    files:
      description: Number of files of the model (SDK metadata not counted).
      type: int
      sample: 12
    bytes:
      description: Total size of those files.
      type: int
      sample: 988097824
    changed:
      description: Whether the tar was (or in check mode would be) written by this run.
      type: bool
    from_base:
      description: With O(base_manifest), the number of files the tar does not carry because the base has them.
      type: int
      sample: 11
bytes:
  description: Total size of the files of every model in the bundle.
  returned: success
  type: int
  sample: 988097824
bytes_written:
  description:
    - Bytes of tars written (in check mode, that would be written).
    - With O(format=tree), bytes of the model files of the directories written, hard-linked or copied.
  returned: success
  type: int
  sample: 988119040
bytes_copied:
  description: With O(format=tree), bytes of model files copied rather than hard-linked from O(cache_dir).
  returned: success
  type: int
  sample: 0
top_files:
  description:
    - The sha256 of each file at the top of O(dest) that travels without the models, by name (C(manifest.json),
      C(SHA256SUMS) and signatures C(*.sig)). A copy of the bundle with the same ones describes the same bundle.
  returned: success, except in check mode when the bundle would change
  type: dict
  sample: {"manifest.json": "0c5b7e0f8a1c0bd3d5b6f4d3a2e1f0c9b8a7d6e5f4c3b2a1908f7e6d5c4b3a21",
           "SHA256SUMS": "9f2c4d1e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d"}
base_manifest_sha256:
  description: With O(base_manifest), the sha256 of that manifest, which the new manifest names.
  returned: when O(base_manifest) is set
  type: str
  sample: 0c5b7e0f8a1c0bd3d5b6f4d3a2e1f0c9b8a7d6e5f4c3b2a1908f7e6d5c4b3a21
removed:
  description: Tars and model directories removed from O(dest) (or that would be) because the manifest no longer lists them.
  returned: success
  type: list
  elements: str
  sample: [Qwen--Qwen2.5-7B-Instruct--v0.9.tar]
msg:
  description: What changed and why, or why nothing did.
  returned: always
  type: str
  sample: "1 model(s) new, 1 model(s) changed commit; wrote 2 tar(s), 7624151040 bytes, reused 1"
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.delta import read_base_manifest, rebase
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tree_writer import TreePlan
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.writer import (
    BundlePlan,
    BundleWriteError,
    discover,
    find_source,
    hash_mismatches,
    lock_path,
    manifest_entry,
    stale_files,
)
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import LAYOUT_CHOICES
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import InvalidName, check_revision, split_model_id
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.locks import FileLock
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import makedirs
from ansible_collections.modelseed.fleet.plugins.module_utils._module.args import MODEL_REF_SPEC, cache_root
from ansible_collections.modelseed.fleet.plugins.module_utils._module.failure import fail, failure

SHOWN = 5


def create_module():
    return AnsibleModule(
        argument_spec=dict(
            cache_dir=dict(type='path'),
            dest=dict(type='path', required=True),
            models=dict(type='list', elements='dict', default=[], options=MODEL_REF_SPEC),
            layout=dict(type='str', default='auto', choices=list(LAYOUT_CHOICES)),
            verify=dict(type='str', default='none', choices=['none', 'full']),
            format=dict(type='str', default='tar', choices=['tar', 'tree']),
            prune=dict(type='bool', default=True),
            base_manifest=dict(type='path'),
            lock_timeout=dict(type='int', default=3600),
        ),
        supports_check_mode=True,
    )


def requested(module, root):
    """[(model id, revision)] to bundle, validated."""
    wanted = []
    for item in module.params['models']:
        error = None
        try:
            split_model_id(item['name'])
            check_revision(item['revision'])
        except InvalidName as exc:
            error = failure(exc)
        if error:
            fail(module, error)
        key = (item['name'], item['revision'])
        if key in wanted:
            module.fail_json(msg='%s@%s is listed twice in models' % key)
        wanted.append(key)
    if wanted:
        return wanted
    wanted, warnings = discover(root, module.params['layout']) if os.path.isdir(root) else ([], [])
    for warning in warnings:
        module.warn(warning)
    if not wanted:
        module.fail_json(msg='no complete model with a verification record found in %s; download models with '
                             'modelseed.fleet.modelscope_model first, or list them in models' % root)
    return wanted


def _some(items):
    return ', '.join(items[:SHOWN]) + (', ...' if len(items) > SHOWN else '')


def collect(module, root, base_models=None):
    """[(manifest entry, Source)] for every requested model, each checked against its record; with ``base_models``
    (delta.read_base_manifest), each a delta on its model there."""
    entries = []
    verify = module.params['verify']
    for model_id, revision in requested(module, root):
        source = find_source(root, model_id, revision, module.params['layout'])
        entry = manifest_entry(model_id, revision, source)
        problems = stale_files(entry, source)
        if verify == 'full':
            problems = [(path, why) for path, why in problems if why in ('missing', 'not a regular file', 'size changed')]
        if problems:
            raise BundleWriteError(
                '%s@%s: %d file(s) of %s changed since they were verified (%s); run modelseed.fleet.modelscope_model for '
                'it to verify them again, or bundle with verify=full' % (
                    model_id, revision, len(problems), source.dir, _some(['%s: %s' % item for item in problems])))
        entries.append((rebase(entry, base_models) if base_models is not None else entry, source))
    return entries


def verify_reused(plan):
    """verify=full: re-hash the files of models whose tar is kept (written ones are hashed as they are copied)."""
    written = set((m['id'], m['revision']) for m in plan.write)
    for model in plan.models:
        key = (model['id'], model['revision'])
        if key in written:
            continue
        bad = hash_mismatches(model, plan.sources[key])
        if bad:
            raise BundleWriteError('%s@%s: %d file(s) differ from the sha256 recorded when they were verified: %s' % (
                key[0], key[1], len(bad), _some(bad)))


def summary(plan, writing):
    models = []
    for model in plan.models:
        key = (model['id'], model['revision'])
        models.append(dict(
            id=model['id'], revision=model['revision'], commit=model['commit'], source_layout=model['source_layout'],
            source=plan.sources[key].dir, tar=model['tar'], tar_size=model['tar_size'], tar_sha256=model['tar_sha256'],
            files=len(model['files']), bytes=model['bytes'], changed=key in writing))
        if 'base' in model:
            models[-1]['from_base'] = len(model['base']['files'])
    return models


def diff(plan):
    before = dict(('%s@%s' % k, m['commit']) for k, m in sorted(plan.old.items()))
    after = dict(('%s@%s' % (m['id'], m['revision']), m['commit']) for m in plan.models)
    return dict(before=before, after=after, before_header='%s (model@revision: commit)' % bundle_format.MANIFEST,
                after_header='%s (model@revision: commit)' % bundle_format.MANIFEST)


def run(module, entries, dest, result):
    plan = (TreePlan if module.params['format'] == 'tree' else BundlePlan)(
        dest, entries, prune=module.params['prune'], base_manifest_sha256=result.get('base_manifest_sha256'))
    if module.params['verify'] == 'full':
        verify_reused(plan)
    writing = set((m['id'], m['revision']) for m in plan.write)
    changed = plan.changed
    reasons = plan.reason_list() or (['manifest or %s out of date' % bundle_format.SUMS] if changed else [])
    if changed and 'base_manifest_sha256' in result:
        reasons.append('a delta against manifest %s (%d of %d file(s) taken from it)' % (
            result['base_manifest_sha256'][:12], sum(len(m['base']['files']) for m in plan.models if 'base' in m),
            sum(len(m['files']) for m in plan.models)))
    if module._diff:
        result['diff'] = diff(plan)
    if not module.check_mode:
        plan.remove_leftovers()
    if changed and not module.check_mode:
        plan.apply(verify=module.params['verify'])
    result.update(changed=changed, models=summary(plan, writing), bytes=sum(m['bytes'] for m in plan.models),
                  bytes_written=plan.bytes_to_write(), removed=plan.prune)
    reused = len(plan.models) - len(plan.write)
    if not (module.check_mode and changed):
        result['top_files'] = bundle_format.top_files(dest)
    if isinstance(plan, TreePlan):
        result['bytes_copied'] = plan.copied
        if changed:
            done = 'would write %d model directories, %d bytes of files' % (len(plan.write), plan.bytes_to_write()) if module.check_mode else (
                'wrote %d model directories, %d bytes of files (%d bytes copied, the rest hard-linked)' % (
                    len(plan.write), plan.bytes_to_write(), plan.copied))
            result['msg'] = '%s; %s, reused %d' % (', '.join(reasons), done, reused)
            return
    if not changed:
        result['msg'] = 'bundle in %s is up to date: %d model(s), %d bytes of files' % (dest, len(plan.models), result['bytes'])
    else:
        result['msg'] = '%s; %s %d tar(s), %d bytes, reused %d' % (
            ', '.join(reasons), 'would write' if module.check_mode else 'wrote', len(plan.write), plan.bytes_to_write(), reused)


def main():
    module = create_module()
    root = cache_root(module)
    dest = os.path.abspath(module.params['dest'])
    result = dict(changed=False, dest=dest, manifest=os.path.join(dest, bundle_format.MANIFEST))
    if os.path.exists(dest) and not os.path.isdir(dest):
        module.fail_json(msg='dest %s exists and is not a directory' % dest, **result)
    if dest == root or dest == '/':
        module.fail_json(msg='dest must be a directory of its own, not %s' % dest, **result)
    if module.params['lock_timeout'] < 0:
        module.fail_json(msg='lock_timeout must be >= 0', **result)
    base = module.params['base_manifest']
    if base and os.path.realpath(os.path.dirname(os.path.abspath(base))) == os.path.realpath(dest):
        # This run rewrites that manifest: the next run would take the delta for its own base.
        module.fail_json(msg='base_manifest %s is in dest: keep a copy of the manifest the other side installed '
                             'outside the bundle directory' % base, **result)
    error = None
    try:
        base_models = None
        if module.params['base_manifest']:
            base_models, result['base_manifest_sha256'] = read_base_manifest(module.params['base_manifest'])
        # The cache alone decides what goes in: a wrong model fails before dest is created.
        entries = collect(module, root, base_models)
        if module.check_mode:
            run(module, entries, dest, result)
        else:
            makedirs(dest)
            with FileLock(lock_path(dest), module.params['lock_timeout']):
                run(module, entries, dest, result)
    except ModelseedError as exc:
        error = failure(exc)
    except OSError as exc:
        error = failure(exc, '%s: %s' % (dest, exc))
    if error is not None:  # reported once the lock is released
        fail(module, error, result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
