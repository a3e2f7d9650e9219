#!/usr/bin/python
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: model_lock
short_description: Read and write C(modelseed.lock), which pins the commits and files of a staging run
version_added: 0.2.0
description:
  - A lock file records, for every model, the revision asked for, the commit it resolved to, the commit's time and
    every file with its size, sha256 and file revision (all that a bundle's tar depends on). Its text format is described
    in C(docs/lock-file.md) of the collection; one line per file, sorted, so that a diff shows what moved.
  - O(operation=read) tells which models the downloads must pin (RV(pins), for the O(modelseed.fleet.modelscope_model#module:locked)
    option) and which the hub resolves again (RV(fresh)), that is models not in the lock yet (at that revision), models
    asked for with other O(models[].include) or O(models[].exclude) patterns than the lock records, and those named in
    O(update). Entries are named C(<model id>@<revision>).
  - O(operation=write) writes the lock from what the downloads resolved (O(resolved)), in one atomic rename. Models the
    lock holds but O(resolved) does not name are dropped.
  - Meant to run on the controller (C(delegate_to=localhost), C(run_once)), as the role M(modelseed.fleet.staging) runs it.
author:
  - modelseed.fleet team (@modelseed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: O(operation=write) reports the change and its diff without writing.
  diff_mode:
    support: full
    details: The lock's text before and after O(operation=write).
  platform:
    platforms: posix
options:
  path:
    description:
      - The lock file.
    type: path
    required: true
  operation:
    description:
      - V(read) the lock (a missing file is an empty lock), or V(write) it.
    type: str
    choices: [read, write]
    default: read
  models:
    description:
      - The models requested, for O(operation=read).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Model id, C(owner/name).
        type: str
        required: true
      revision:
        description: Branch, tag or commit id.
        type: str
        default: master
      include:
        description: Glob patterns of the files selected; all when empty.
        type: list
        elements: str
        default: []
      exclude:
        description: Glob patterns of the files left out.
        type: list
        elements: str
        default: []
  update:
    description:
      - Model ids whose lock entry is replaced by what the hub says now (O(operation=read)); V(all) for every model.
      - A model id that O(models) does not request fails the task.
    type: list
    elements: str
    default: []
  resolved:
    description:
      - What the downloads resolved, for O(operation=write), one entry per model.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Model id.
        type: str
        required: true
      revision:
        description: Revision asked for.
        type: str
        required: true
      include:
        description: Glob patterns of the files selected.
        type: list
        elements: str
        default: []
      exclude:
        description: Glob patterns of the files left out.
        type: list
        elements: str
        default: []
      commit:
        description: The commit the revision resolved to (RV(modelseed.fleet.modelscope_model#module:commit)).
        type: str
        required: true
      created_at:
        description: The commit's time (RV(modelseed.fleet.modelscope_model#module:created_at)).
        type: int
        required: true
      files:
        description: The files (RV(modelseed.fleet.modelscope_model#module:file_list)), each with path, size, sha256 and revision.
        type: list
        elements: dict
        required: true
notes:
  - The role M(modelseed.fleet.staging) reads the lock before the downloads and writes it after they succeeded, when
    C(modelseed_lock_file) is set; C(modelseed_lock_update) is O(update).
seealso:
  - module: modelseed.fleet.modelscope_model
'''

EXAMPLES = r'''
- name: Read the lock
  modelseed.fleet.model_lock:
    path: "{{ playbook_dir }}/modelseed.lock"
    models: [{name: Qwen/Qwen2.5-0.5B-Instruct, revision: master}]
  delegate_to: localhost
  run_once: true
  register: lock

- name: Download what the lock pins
  modelseed.fleet.modelscope_model:
    name: Qwen/Qwen2.5-0.5B-Instruct
    cache_dir: /var/cache/modelscope
    locked: "{{ lock.pins['Qwen/Qwen2.5-0.5B-Instruct@master'] | default(omit) }}"
  register: download

- name: Write the lock
  modelseed.fleet.model_lock:
    path: "{{ playbook_dir }}/modelseed.lock"
    operation: write
    resolved:
      - name: Qwen/Qwen2.5-0.5B-Instruct
        revision: master
        commit: "{{ download.commit }}"
        created_at: "{{ download.created_at }}"
        files: "{{ download.file_list }}"
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
path:
  description: The lock file.
  returned: always
  type: str
  sample: /home/ops/fleet/modelseed.lock
exists:
  description: Whether the lock file existed before the task.
  returned: always
  type: bool
  sample: true
pins:
  description:
    - Per C(<model id>@<revision>), what the download must fetch; the value of the
      O(modelseed.fleet.modelscope_model#module:locked) option.
  returned: when O(operation=read)
  type: dict
  sample: {Qwen/Qwen2.5-0.5B-Instruct@master: {commit: 5a1d6b0c3a5e4f4b9d4a8e0e1f2c3b4a5d6e7f80, created_at: 1718000000, files: []}}
fresh:
  description: Per C(<model id>@<revision>) that the hub resolves again, why.
  returned: when O(operation=read)
  type: dict
  sample: {Qwen/Qwen2.5-7B-Instruct@master: not in the lock yet}
changes:
  description: One line per model whose entry the write added, moved, changed or removed.
  returned: when O(operation=write)
  type: list
  elements: str
  sample: ['Qwen/Qwen2.5-0.5B-Instruct@master moved from commit 5a1d6b0c3a5e to 9c2e0d1f3a5e']
msg:
  description: What the lock says or what changed in it.
  returned: always
  type: str
  sample: '/home/ops/fleet/modelseed.lock: 1 model(s) pinned, 1 resolved again (Qwen/Qwen2.5-7B-Instruct@master: not in the lock yet)'
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, read_bytes
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.lock import LockError, changes, parse, pins, render
from ansible_collections.modelseed.fleet.plugins.module_utils._module.failure import fail

_SELECTION = dict(
    include=dict(type='list', elements='str', default=[]),
    exclude=dict(type='list', elements='str', default=[]),
)


def create_module():
    return AnsibleModule(argument_spec=dict(
        path=dict(type='path', required=True),
        operation=dict(type='str', choices=['read', 'write'], default='read'),
        models=dict(type='list', elements='dict', default=[], options=dict(
            name=dict(type='str', required=True), revision=dict(type='str', default='master'), **_SELECTION)),
        update=dict(type='list', elements='str', default=[]),
        resolved=dict(type='list', elements='dict', default=[], options=dict(
            name=dict(type='str', required=True), revision=dict(type='str', required=True),
            commit=dict(type='str', required=True), created_at=dict(type='int', required=True),
            files=dict(type='list', elements='dict', required=True), **_SELECTION)),
    ), supports_check_mode=True)


def read_text(path):
    """The lock's text, or None when there is no lock file yet."""
    data = read_bytes(path)
    if data is None:
        return None
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        raise LockError('not UTF-8 text')


def read(module, result, text):
    p = module.params
    pinned, fresh = pins(parse(text) if text else {}, p['models'], p['update'])
    why = ', '.join('%s: %s' % item for item in sorted(fresh.items()))
    result.update(pins=pinned, fresh=fresh, msg='%s: %d model(s) pinned, %d resolved again%s' % (
        p['path'], len(pinned), len(fresh), ' (%s)' % why if why else ''))


def write(module, result, text):
    p = module.params
    new_text = render(p['resolved'])
    old = {}
    if text:
        try:
            old = parse(text)
        except LockError:
            old = {}  # replaced whole; the read before the downloads said why
    lines = changes(old, parse(new_text))
    result['changes'] = lines
    result['changed'] = new_text != text
    if module._diff:
        result['diff'] = dict(before=text or '', after=new_text, before_header=p['path'], after_header=p['path'])
    if not result['changed']:
        result['msg'] = '%s: unchanged, %d model(s)' % (p['path'], len(p['resolved']))
        return
    verb = 'would write' if module.check_mode else 'wrote'
    result['msg'] = '%s: %s %d model(s)%s' % (p['path'], verb, len(p['resolved']), ': ' + '; '.join(lines) if lines else '')
    if not module.check_mode:
        atomic_write(p['path'], new_text.encode('utf-8'), 0o644)


def main():
    module = create_module()
    p = module.params
    result = dict(changed=False, path=p['path'])
    if p['operation'] == 'write' and not p['resolved']:
        module.fail_json(msg='operation=write needs resolved: the models the downloads resolved', **result)
    if not os.path.isdir(os.path.dirname(p['path']) or '.'):
        module.fail_json(msg='%s: its directory does not exist' % p['path'], **result)
    try:
        text = read_text(p['path'])
        result['exists'] = text is not None
        if p['operation'] == 'read':
            read(module, result, text)
        else:
            write(module, result, text)
    except LockError as exc:
        fail(module, ModelseedError('%s: %s' % (p['path'], exc)), result)
    except (ModelseedError, OSError) as exc:
        fail(module, exc, result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
