#!/usr/bin/python
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: modelscope_ready
short_description: Prove with a host's own modelscope SDK that every model loads from the cache, offline
version_added: 0.1.0
description:
  - Runs each Python interpreter of O(pythons) that has the C(modelscope) SDK, as the runtime O(user), with the
    host's C(/etc/environment) and C(MODELSCOPE_CACHE), and calls C(snapshot_download(id, revision=...,
    local_files_only=True)) for every model. That call makes no network request in any SDK generation, so
    success means the model loads with zero downloads.
  - Checks that the directory the SDK returns holds every file recorded when the model was downloaded or
    installed.
  - Interpreters without the SDK are reported and skipped. Uses only the Python standard library.
author:
  - modelseed.fleet team (@modelseed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Runs the probe in check mode too; SDKs up to 1.37 may refresh their own C(.mdl) and lock files.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  models:
    description:
      - Models to load.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Model id, C(owner/name).
        type: str
        required: true
        aliases: [model_id]
      revision:
        description:
          - The revision the serving application asks for.
        type: str
        default: master
  pythons:
    description:
      - Interpreters of the serving stack to try, for example C(/opt/vllm/bin/python).
    type: list
    elements: path
    required: true
  user:
    description:
      - Run the SDK as this user, as the serving stack does. Default the user running the module.
    type: str
  cache_dir:
    description:
      - C(MODELSCOPE_CACHE) for the probe. Default the value in C(/etc/environment), else the module's environment.
    type: path
  environment:
    description:
      - More environment variables for the probe, for example C(MODELSCOPE_ENDPOINT).
    type: dict
    default: {}
  timeout:
    description:
      - Seconds one interpreter may take for all models.
    type: int
    default: 300
  fail_when_not_ready:
    description:
      - Fail when an interpreter with the SDK does not load every model.
    type: bool
    default: false
  describe_cache:
    description:
      - Also read the cache after the probe, as M(modelseed.fleet.cache_info) does (O(modelseed.fleet.cache_info#module:verify=quick),
        only the models of O(models)), and return it as RV(cache).
      - Saves a node a second module call when both the proof and a description of its cache are wanted.
    type: bool
    default: false
seealso:
  - module: modelseed.fleet.modelscope_env
  - module: modelseed.fleet.cache_info
'''

EXAMPLES = r'''
- name: The vLLM venv loads every model offline, as the vllm user
  modelseed.fleet.modelscope_ready:
    models:
      - name: Qwen/Qwen2.5-7B-Instruct
    pythons: [/opt/vllm/bin/python]
    user: vllm
    fail_when_not_ready: true
'''

RETURN = r'''
ready:
  description: Whether at least one interpreter has the SDK and every one that has it loads every model.
  returned: always
  type: bool
sdks:
  description: One report per interpreter with the SDK.
  returned: always
  type: list
  elements: dict
  sample: [{python: /opt/vllm/bin/python, version: 1.40.2, ready: true,
            models: [{id: Qwen/Qwen2.5-7B-Instruct, ok: true, path: /var/cache/modelscope/models/Qwen/Qwen2___5-7B-Instruct}]}]
without_sdk:
  description: Interpreters that do not have the SDK (or do not exist).
  returned: always
  type: list
  elements: str
stray_dirs_removed:
  description:
    - Directories an SDK up to 1.37 created while missing a model, holding only its metadata, removed again
      because SDK 1.38 and later would take them for the model and stop looking at its snapshot.
  returned: always
  type: list
  elements: str
cache:
  description:
    - The cache after the probe, with C(cache_dir), C(models) and C(problems) as M(modelseed.fleet.cache_info)
      returns them.
  returned: when O(describe_cache=true)
  type: dict
  sample: {cache_dir: /var/cache/modelscope, models: [], problems: []}
msg:
  description: Summary.
  returned: always
  type: str
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import InvalidName, check_revision, split_model_id
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import Record
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.scan import describe_problem, scan
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import record_files
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import read_bytes
from ansible_collections.modelseed.fleet.plugins.module_utils._host.env_files import current_values
from ansible_collections.modelseed.fleet.plugins.module_utils._host.readiness import legacy_dirs, remove_stray_dirs, run_probe
from ansible_collections.modelseed.fleet.plugins.module_utils._host.sdk_detect import sdk_version
from ansible_collections.modelseed.fleet.plugins.module_utils._module.args import MODEL_REF_SPEC
from ansible_collections.modelseed.fleet.plugins.module_utils._module.failure import fail


def recorded_files(cache, model_id, revision):
    """Paths recorded for the model at that revision in any layout of the cache."""
    files = set()
    for path in record_files(cache):
        record = Record.load(path)
        if record.data.get('model') == model_id and record.data.get('revision') == revision:
            files.update(record.files)
    return sorted(files)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            models=dict(type='list', elements='dict', required=True, options=MODEL_REF_SPEC),
            pythons=dict(type='list', elements='path', required=True),
            user=dict(type='str'),
            cache_dir=dict(type='path'),
            environment=dict(type='dict', default={}),
            timeout=dict(type='int', default=300),
            fail_when_not_ready=dict(type='bool', default=False),
            describe_cache=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    host_env = current_values((read_bytes('/etc/environment') or b'').decode('utf-8', 'replace'))
    env = {'PATH': os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin'), 'LANG': 'C.UTF-8'}
    env.update(host_env)
    env.update((str(k), str(v)) for k, v in p['environment'].items())
    cache = p['cache_dir'] or env.get('MODELSCOPE_CACHE') or os.environ.get('MODELSCOPE_CACHE')
    if not cache:
        module.fail_json(msg='no cache_dir given and MODELSCOPE_CACHE is set neither in /etc/environment nor for the module')
    env['MODELSCOPE_CACHE'] = cache

    models = []
    for item in p['models']:
        model_id, revision = item['name'], item['revision']
        try:
            split_model_id(model_id)
            check_revision(revision)
        except InvalidName as exc:
            fail(module, exc)
        models.append({'id': model_id, 'revision': revision, 'files': recorded_files(cache, model_id, revision)})

    candidates = [d for m in models for d in legacy_dirs(cache, m['id'])]
    before = set(d for d in candidates if os.path.lexists(d))
    reports, without, removed = [], [], []
    for python in p['pythons']:
        if not sdk_version(python):
            without.append(python)
            continue
        reports.append(run_probe(python, models, env, user=p['user'], timeout=p['timeout']))
        removed.extend(remove_stray_dirs(before, candidates))
    ready = bool(reports) and all(r['ready'] for r in reports)
    lines = ['%s (modelscope %s): %s' % (r['python'], r['version'], 'ready' if r['ready'] else '; '.join(
        r['error'] or '%s: %s' % (m['id'], m['error']) for m in r['models'] if r['error'] or not m['ok'])) for r in reports]
    msg = ' | '.join(lines) if reports else 'no interpreter with the modelscope SDK among %s' % ', '.join(p['pythons'])
    result = dict(changed=False, ready=ready, sdks=reports, without_sdk=without, stray_dirs_removed=removed, msg=msg)
    if p['describe_cache']:
        found = scan(cache, 'quick', [m['id'] for m in models]) if os.path.isdir(cache) else []
        result['cache'] = dict(cache_dir=cache, models=found, problems=[d for d in (describe_problem(m) for m in found) if d])
    if p['fail_when_not_ready'] and reports and not ready:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
