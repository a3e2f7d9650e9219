#!/usr/bin/python
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: modelscope_model
short_description: Download a ModelScope model into a cache every SDK generation recognises
version_added: 0.1.0
description:
  - Ensures that model O(name) at O(revision) is present in O(cache_dir) in the layout a
    C(modelscope) SDK reads, with the hidden metadata (C(.msc), C(.mdl), C(.mv)) that makes the SDK
    treat it as a complete cache hit, so it downloads nothing again.
  - A branch or tag is first resolved to its commit, and every file is fetched at that commit,
    so a push to the hub during a download cannot mix two revisions.
  - Files download in parallel, each streamed through sha256 and checked against the hub's listing
    before it gets its final name. Interrupted downloads resume with HTTP Range requests. 429, 5xx
    and connection errors are retried with exponential backoff (O(retries), O(retry_delay)).
  - The verified sha256 of every file is recorded under C(<cache_dir>/.modelseed/), which no SDK reads,
    so a second run and later steps know each file is intact without reading it again.
  - Uses only the Python standard library.
author:
  - modelseed.fleet team (@modelseed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - modelseed.fleet.hub
  - modelseed.fleet.layout
  - modelseed.fleet.sync
  - modelseed.fleet.transfer
attributes:
  check_mode:
    support: full
    details: Resolves the revision and lists the files on the hub, then reports what would be fetched.
  diff_mode:
    support: full
    details: The model's commit and files (path, size, sha256) as recorded before, and as the hub lists them or none
      after (O(state=absent)).
  platform:
    platforms: posix
options:
  name:
    description:
      - Model id, C(owner/name), for example C(Qwen/Qwen2.5-7B-Instruct).
    type: str
    required: true
    aliases: [model_id]
  revision:
    description:
      - Branch, tag or commit id.
      - With O(layout=snapshots) this is also the directory name under C(snapshots/), as SDK 1.38 and later
        name it.
      - Seed the revision the serving application asks for. One that passes none gets V(master) from
        C(snapshot_download) of SDK 1.37.1 and 1.40.2, but the newest tag made before the SDK's release date
        from C(snapshot_download) of 1.15.0 and from C(model_file_download) of 1.15.0 and 1.40.2 (see
        C(docs/layouts.md) in the collection).
      - Layouts V(hub), V(models) and V(all) hold one revision of a model per cache root; seeding another
        replaces it.
    type: str
    default: master
  cache_dir:
    description:
      - Cache root, the value C(MODELSCOPE_CACHE) has for the SDK that will read the model.
      - Defaults to C(MODELSCOPE_CACHE) in the environment of the module.
    type: path
  include:
    description:
      - Only files whose path or base name matches one of these glob patterns.
      - All files when empty.
    type: list
    elements: str
    default: []
  exclude:
    description:
      - Skip files whose path or base name matches one of these glob patterns.
    type: list
    elements: str
    default: []
  state:
    description:
      - V(present) downloads what is missing; V(absent) removes the model directory, its layout links and its
        record (no hub access).
    type: str
    default: present
    choices: [present, absent]
  workers:
    description:
      - Files downloaded (and hashed) in parallel.
    type: int
    default: 8
  adopt:
    description:
      - Keep files already in the model directory that match the hub's size and sha256, even when no SDK
        metadata or record describes them (weights fetched with other tools), and write their metadata.
      - When false such files are downloaded again.
    type: bool
    default: true
  adopt_from:
    description:
      - A directory holding some of the model's files at their repo paths (for example an C(aria2) or
        C(rsync) download). Files matching the hub's size and sha256 are hard-linked (or copied) into the
        cache instead of downloaded.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for another run that is writing the same model.
    type: int
    default: 3600
  locked:
    description:
      - Pin the model to a commit and its files, as a lock file (C(modelseed.lock), see M(modelseed.fleet.model_lock))
        recorded them. The files are fetched at O(locked.commit) whatever O(revision) points at on the hub now.
      - Before anything is downloaded, the hub's listing at that commit (after O(include) and O(exclude)) is compared
        with O(locked.files). Any difference (a file changed, gone or added, in check mode too) fails the task with the
        list of what differs, and nothing is written to the cache.
    type: dict
    suboptions:
      commit:
        description: The commit the files are fetched at.
        type: str
        required: true
      created_at:
        description: The commit's time (seconds since the epoch), written to the SDK metadata instead of what the hub says now.
        type: int
        default: 0
      files:
        description: Every file of the model as the lock lists it.
        type: list
        elements: dict
        required: true
        suboptions:
          path:
            description: Path in the repository.
            type: str
            required: true
          size:
            description: Size in bytes.
            type: int
            required: true
          sha256:
            description: sha256 of the file.
            type: str
            required: true
          revision:
            description: The commit that last changed the file, as the hub lists it.
            type: str
            default: ''
notes:
  - The model is complete only for the files selected by O(include) and O(exclude); an SDK asked for the whole
    repo downloads the rest.
seealso:
  - module: modelseed.fleet.cache_info
'''

EXAMPLES = r'''
- name: Download a model for whatever SDK the serving venv has
  modelseed.fleet.modelscope_model:
    name: Qwen/Qwen2.5-0.5B-Instruct
    cache_dir: /var/cache/modelscope
    sdk_pythons: [/opt/vllm/bin/python]

- name: Only the safetensors weights and configs of a tag, for SDK 1.38 and later
  modelseed.fleet.modelscope_model:
    name: Qwen/Qwen2.5-7B-Instruct
    revision: v1.0
    cache_dir: /srv/modelscope
    layout: snapshots
    include: ['*.safetensors', '*.json', '*.txt']

- name: Adopt weights fetched earlier with aria2, download only what is missing
  modelseed.fleet.modelscope_model:
    name: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
    cache_dir: /var/cache/modelscope
    layout: all
    adopt_from: /data/aria2/DeepSeek-R1-Distill-Qwen-7B
    endpoint: https://modelscope.mirror.example.com
    token: "{{ modelscope_token }}"

- name: Fetch exactly what a lock file pins, failing if the hub has changed since
  modelseed.fleet.modelscope_model:
    name: Qwen/Qwen2.5-0.5B-Instruct
    cache_dir: /var/cache/modelscope
    locked: "{{ lock.pins['Qwen/Qwen2.5-0.5B-Instruct@master'] }}"

- name: Remove a model from the cache
  modelseed.fleet.modelscope_model:
    name: Qwen/Qwen2.5-0.5B-Instruct
    cache_dir: /var/cache/modelscope
    layout: all
    state: absent
'''

RETURN = r'''
path:
  description: Directory holding the model's files.
  returned: always
  type: str
  sample: /var/cache/modelscope/models/Qwen/Qwen2___5-0___5B-Instruct
layout:
  description: Layout written (after resolving V(auto)).
  returned: always
  type: str
  sample: all
sdk_generations:
  description: SDK version ranges that read the model as a cache hit.
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
revision:
  description: Revision asked for.
  returned: always
  type: str
  sample: master
commit:
  description: Commit the revision resolved to, at which every file was fetched.
  returned: when O(state=present)
  type: str
  sample: 5a1d6b0c3a5e4f4b9d4a8e0e1f2c3b4a5d6e7f80
created_at:
  description: The commit's time (seconds since the epoch), as the SDK metadata records it.
  returned: when O(state=present)
  type: int
  sample: 1718000000
hub_commit:
  description: The commit O(revision) points at on the hub now, which differs from RV(commit) when the lock pins an older one.
  returned: when O(locked) is set and the hub still knows O(revision)
  type: str
  sample: 9c2e0d1f3a5e4f4b9d4a8e0e1f2c3b4a5d6e7f81
drift:
  description: How the hub's files at the locked commit differ from O(locked.files), one line per file.
  returned: when O(locked) is set and the hub no longer matches it
  type: list
  elements: str
  sample: ['config.json: locked 24 bytes sha256 1f0a5c2d3e4b, the hub has 31 bytes sha256 77b0e1a9c3d2']
files:
  description: Number of files of the model selected by O(include) and O(exclude).
  returned: when O(state=present)
  type: int
  sample: 12
file_list:
  description: Those files as the hub lists them at RV(commit), sorted by path; what a lock file records.
  returned: when O(state=present)
  type: list
  elements: dict
  sample: [{path: config.json, size: 659, sha256: 0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9, revision: 5a1d6b0c3a5e}]
bytes:
  description: Total size of those files.
  returned: when O(state=present)
  type: int
  sample: 988097824
files_downloaded:
  description: Paths downloaded, or that would be in check mode.
  returned: when O(state=present)
  type: list
  elements: str
  sample: [model.safetensors]
files_adopted:
  description: Paths found on disk without a record, verified by sha256 and kept.
  returned: when O(state=present)
  type: list
  elements: str
  sample: []
bytes_downloaded:
  description: Bytes transferred from the hub (in check mode, bytes that would be fetched).
  returned: when O(state=present)
  type: int
  sample: 988097824
bytes_reused:
  description: Bytes of files already in the cache or adopted, not downloaded.
  returned: when O(state=present)
  type: int
  sample: 0
msg:
  description: What changed and why, or why nothing did.
  returned: always
  type: str
  sample: "Qwen/Qwen2.5-0.5B-Instruct@master: 12 file(s) missing or changed on the hub; downloaded 988097824 bytes, reused 0"
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import generations
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import InvalidName, check_revision, split_model_id
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.locks import FileLock
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.api import (
    HubApi,
    HubError,
    Resolved,
    UnknownRevision,
    auth_headers,
    resolve_endpoint,
    select_files,
)
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpClient
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.lock import LockDrift, differences, summary
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.model_sync import ModelCache
from ansible_collections.modelseed.fleet.plugins.module_utils._module.args import (
    HUB_ARG_SPEC,
    LAYOUT_ARG_SPEC,
    SYNC_ARG_SPEC,
    cache_root,
    choose_layout,
    warn_unverified,
)
from ansible_collections.modelseed.fleet.plugins.module_utils._module.failure import fail, failure


def create_module():
    argument_spec = dict(
        name=dict(type='str', required=True, aliases=['model_id']),
        revision=dict(type='str', default='master'),
        cache_dir=dict(type='path'),
        include=dict(type='list', elements='str', default=[]),
        exclude=dict(type='list', elements='str', default=[]),
        state=dict(type='str', default='present', choices=['present', 'absent']),
        workers=dict(type='int', default=8),
        adopt=dict(type='bool', default=True),
        adopt_from=dict(type='path'),
        lock_timeout=dict(type='int', default=3600),
        locked=dict(type='dict', options=dict(
            commit=dict(type='str', required=True),
            created_at=dict(type='int', default=0),
            files=dict(type='list', elements='dict', required=True, options=dict(
                path=dict(type='str', required=True),
                size=dict(type='int', required=True),
                sha256=dict(type='str', required=True),
                revision=dict(type='str', default=''),
            )),
        )),
    )
    argument_spec.update(HUB_ARG_SPEC)
    argument_spec.update(SYNC_ARG_SPEC)
    argument_spec.update(LAYOUT_ARG_SPEC)
    return AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)


def ask_hub(module, cache, result):
    """The client and the selected files of the resolved revision; fails on a bad revision or selection."""
    p = module.params
    endpoint = resolve_endpoint(p['endpoint'], os.environ)
    warn_unverified(module, endpoint)
    client = HttpClient(timeout=p['timeout'], retries=p['retries'], backoff=p['retry_delay'], validate_certs=p['validate_certs'],
                        ca_path=p['ca_path'], auth_url=endpoint, auth_headers=auth_headers(p['token']))
    api = HubApi(client, endpoint)
    if p['locked']:
        files = locked_files(module, cache, api, result)
    else:
        cache.resolved = api.resolve(p['name'], p['revision'])
        files = select_files(api.list_files(p['name'], cache.resolved.commit), p['include'], p['exclude'])
    if not files:
        module.fail_json(msg='%s@%s: no file matches include %s and exclude %s' % (
            p['name'], p['revision'], p['include'], p['exclude']), **result)
    return client, api, files


def locked_files(module, cache, api, result):
    """The selected files at the locked commit, when they are exactly the locked ones; else LockDrift saying what differs."""
    p = module.params
    pin = p['locked']
    label = '%s@%s' % (p['name'], p['revision'])
    cache.resolved = Resolved(p['revision'], pin['commit'], pin['created_at'])
    try:
        result['hub_commit'] = api.resolve(p['name'], p['revision']).commit
    except UnknownRevision:
        pass  # a branch or tag removed since: the locked commit may still be there
    try:
        listing = api.list_files(p['name'], pin['commit'])
    except HubError as exc:
        raise LockDrift('%s: the hub cannot list the locked commit %s (%s); update the lock to move on' % (label, pin['commit'], exc))
    files = select_files(listing, p['include'], p['exclude'])
    drift = differences(pin['files'], [f._asdict() for f in files])
    if drift:
        result['drift'] = drift
        raise LockDrift('%s: the hub no longer serves what the lock pins at commit %s, nothing was downloaded: %s' % (
            label, pin['commit'][:12], summary(drift)))
    return files


def model_text(cache, commit, files):
    """The model as a diff shows it: a line for the commit, one per file."""
    if commit is None and not files:
        return ''
    lines = ['%s: %s@%s commit %s' % (cache.rel, cache.model_id, cache.resolved.revision, (commit or 'not recorded')[:12])]
    lines.extend('  %s (%d bytes, sha256 %s)' % (path, size, sha256) for path, size, sha256 in sorted(files))
    return '\n'.join(lines) + '\n'


def recorded_text(cache):
    record = cache.record()
    if not record.files:
        return '%s: not recorded as verified\n' % cache.rel if os.path.lexists(cache.dir) else ''
    return model_text(cache, record.data.get('commit'), [(path, entry.get('size', 0), entry.get('sha256')) for path, entry in record.files.items()])


def add_diff(module, result, cache, after):
    if module._diff:
        result['diff'] = dict(before=recorded_text(cache), after=after, before_header=cache.dir, after_header=cache.dir)


def ensure_present(module, cache, result, client, api, files):
    p = module.params
    add_diff(module, result, cache, model_text(cache, cache.resolved.commit, [(f.path, f.size, f.sha256) for f in files]))
    label = '%s@%s' % (p['name'], p['revision'])
    if result.get('hub_commit') not in (None, cache.resolved.commit):
        label += ' (locked at commit %s; the hub has moved %s to %s)' % (cache.resolved.commit[:12], p['revision'], result['hub_commit'][:12])
    plan = cache.plan(files, adopt=p['adopt'], adopt_from=p['adopt_from'], workers=p['workers'])
    reused = plan.reuse + plan.adopt + plan.staged + [f for f, _source in plan.copy]
    result.update(
        commit=cache.resolved.commit, created_at=cache.resolved.created_at, files=len(files), bytes=sum(f.size for f in files),
        file_list=[f._asdict() for f in files],
        files_downloaded=[f.path for f in plan.fetch], files_adopted=[f.path for f in plan.adopt] + [f.path for f, _source in plan.copy],
        bytes_downloaded=sum(f.size for f in plan.fetch), bytes_reused=sum(f.size for f in reused))
    if not plan.changed:
        result['msg'] = '%s: all %d file(s) present and recorded as verified at commit %s' % (
            label, len(files), cache.resolved.commit[:12])
        if not module.check_mode:
            cache.remove_scratch()
        return
    result['changed'] = True
    reasons = '; '.join(plan.reasons())
    if module.check_mode:
        result['msg'] = '%s: %s; would download %d bytes' % (label, reasons, result['bytes_downloaded'])
        return
    result['bytes_downloaded'] = cache.apply(plan, files, client, api, workers=p['workers'])
    result['msg'] = '%s: %s; downloaded %d bytes, reused %d' % (label, reasons, result['bytes_downloaded'], result['bytes_reused'])


def main():
    module = create_module()
    p = module.params
    result = dict(changed=False, revision=p['revision'])
    try:
        split_model_id(p['name'])
        check_revision(p['revision'])
    except InvalidName as exc:
        fail(module, exc, result)
    if p['workers'] < 1 or p['retries'] < 0 or p['retry_delay'] < 0 or p['timeout'] <= 0 or p['lock_timeout'] < 0:
        module.fail_json(msg='workers must be >= 1, retries >= 0, retry_delay >= 0, timeout > 0 and lock_timeout >= 0', **result)
    if p['adopt_from'] and not os.path.isdir(p['adopt_from']):
        module.fail_json(msg='adopt_from %s is not a directory' % p['adopt_from'], **result)
    root = cache_root(module)
    layout = choose_layout(module, result)
    cache = ModelCache(root, layout, p['name'], Resolved(p['revision'], None, 0), p['sync'])
    result.update(path=cache.dir, layout=layout, sdk_generations=generations(layout))
    try:
        if p['state'] == 'absent':
            exists = os.path.lexists(cache.dir) or os.path.exists(cache.record_path)
            result['changed'] = exists
            add_diff(module, result, cache, '')
            result['msg'] = '%s removed from %s' % (p['name'], cache.dir) if exists else '%s is not in %s' % (p['name'], cache.dir)
            if exists and not module.check_mode:
                with FileLock(cache.lock_path, p['lock_timeout']):
                    cache.remove()
        else:
            # The hub first: a wrong revision, model or certificate fails before anything is written.
            hub = ask_hub(module, cache, result)
            if module.check_mode:
                ensure_present(module, cache, result, *hub)
            else:
                with FileLock(cache.lock_path, p['lock_timeout']):
                    cache.recover()
                    ensure_present(module, cache, result, *hub)
    except ModelseedError as exc:
        fail(module, exc, result)
    except OSError as exc:
        fail(module, failure(exc, '%s: %s' % (p['name'], exc)), result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
