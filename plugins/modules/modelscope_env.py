#!/usr/bin/python
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: modelscope_env
short_description: Set MODELSCOPE_CACHE (and friends) the same way for every session and service of a host
version_added: 0.1.0
description:
  - Sets environment variables such as C(MODELSCOPE_CACHE) and C(MODELSCOPE_ENDPOINT) in C(/etc/environment)
    (read by pam_env for every login), in a C(/etc/profile.d) script (shells that bypass PAM), in a drop-in
    for the systemd manager (C(DefaultEnvironment) of every system service) and in drop-ins for named services.
  - Keeps every other line of C(/etc/environment); a variable ends up on exactly one line, so re-runs never
    add duplicates.
  - Reports a different value found in C(/etc/environment) or another C(/etc/profile.d) script, and replaces it,
    keeps it, or fails, as O(conflict) says.
  - Does not need systemd to be running, nor any network; O(root) writes into an image tree.
  - Uses only the Python standard library.
author:
  - modelseed.fleet team (@modelseed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  variables:
    description:
      - "Variables to set, for example C({MODELSCOPE_CACHE: /var/cache/modelscope})."
      - With O(state=absent), the variables to remove (values are ignored).
    type: dict
    required: true
  targets:
    description:
      - Where to set them.
    type: list
    elements: str
    choices: [environment, profile, systemd]
    default: [environment, profile, systemd]
  services:
    description:
      - systemd units that get an C(Environment=) drop-in of their own, for example C(vllm) or C(sglang.service).
    type: list
    elements: str
    default: []
  name:
    description:
      - Base name of the profile script and drop-in files.
    type: str
    default: modelscope
  conflict:
    description:
      - What to do when C(/etc/environment) or another profile script already sets one of the variables to
        another value.
      - V(replace) writes the new value and reports the old one in RV(conflicts).
      - V(keep) leaves such variables alone everywhere and reports them.
      - V(fail) changes nothing and fails.
    type: str
    choices: [replace, keep, fail]
    default: replace
  root:
    description:
      - Root of the file system to write to, for example a golden image mounted at C(/mnt/image).
    type: path
    default: /
  state:
    description:
      - V(present) sets the variables, V(absent) removes them and the files this module wrote.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: modelseed.fleet.modelscope_model
'''

EXAMPLES = r'''
- name: One MODELSCOPE_CACHE for logins, services and the vLLM unit
  modelseed.fleet.modelscope_env:
    variables:
      MODELSCOPE_CACHE: /var/cache/modelscope
      MODELSCOPE_ENDPOINT: https://modelscope.mirror.example.com
    services: [vllm]
  register: env
  notify: Reload systemd

- name: In a golden image, before first boot
  modelseed.fleet.modelscope_env:
    variables:
      MODELSCOPE_CACHE: /var/cache/modelscope
    root: /mnt/image
'''

RETURN = r'''
files:
  description: Files written or removed.
  returned: always
  type: list
  elements: str
  sample: [/etc/environment, /etc/profile.d/modelscope.sh]
systemd_changed:
  description: Whether a systemd drop-in changed, so the manager needs C(systemctl daemon-reload).
  returned: always
  type: bool
  sample: true
systemd_running:
  description:
    - Whether systemd runs the system under O(root) (C(/run/systemd/system) is a directory there), so that a
      C(systemctl daemon-reload) or a restart can reach it.
  returned: always
  type: bool
  sample: true
conflicts:
  description: Other values found for the variables, with where they were set.
  returned: always
  type: list
  elements: dict
  sample: [{name: MODELSCOPE_CACHE, value: /root/.cache/modelscope, file: /etc/environment}]
msg:
  description: What changed and why.
  returned: always
  type: str
'''

import glob
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, makedirs, read_bytes, unlink
from ansible_collections.modelseed.fleet.plugins.module_utils._host import env_files
from ansible_collections.modelseed.fleet.plugins.module_utils._module.failure import fail


def _text(path):
    data = read_bytes(path)
    return None if data is None else data.decode('utf-8', 'surrogateescape')


class EnvFiles:
    def __init__(self, root, name):
        self.root = root
        self.name = name

    def path(self, *parts):
        return os.path.join(self.root, 'etc', *parts)

    @property
    def environment(self):
        return self.path('environment')

    @property
    def profile(self):
        return self.path('profile.d', self.name + '.sh')

    @property
    def manager(self):
        return self.path('systemd', 'system.conf.d', self.name + '.conf')

    def service(self, unit):
        return self.path('systemd', 'system', env_files.unit_name(unit) + '.d', self.name + '.conf')


def find_conflicts(files, variables):
    conflicts = []
    for name, value in sorted(env_files.current_values(_text(files.environment) or '').items()):
        if name in variables and value != variables[name]:
            conflicts.append(dict(name=name, value=value, file=files.environment))
    for script in sorted(glob.glob(files.path('profile.d', '*.sh'))):
        if script == files.profile:
            continue
        for name, value in sorted(env_files.current_values(_text(script) or '').items()):
            if name in variables and value != variables[name]:
                conflicts.append(dict(name=name, value=value, file=script))
    return conflicts


def desired_contents(module, files, variables):
    """{path: new text, or None to delete} for every file the module manages."""
    p = module.params
    absent = p['state'] == 'absent'
    wanted = {}
    if 'environment' in p['targets']:
        wanted[files.environment] = env_files.edit_environment(_text(files.environment) or '', variables, remove=absent)[0]
    if 'profile' in p['targets']:
        wanted[files.profile] = None if absent else env_files.profile_script(variables)
    if 'systemd' in p['targets']:
        wanted[files.manager] = None if absent else env_files.systemd_manager_dropin(variables)
    for unit in p['services']:
        wanted[files.service(unit)] = None if absent else env_files.systemd_service_dropin(variables)
    return wanted


def main():
    module = AnsibleModule(
        argument_spec=dict(
            variables=dict(type='dict', required=True),
            targets=dict(type='list', elements='str', choices=['environment', 'profile', 'systemd'],
                         default=['environment', 'profile', 'systemd']),
            services=dict(type='list', elements='str', default=[]),
            name=dict(type='str', default='modelscope'),
            conflict=dict(type='str', choices=['replace', 'keep', 'fail'], default='replace'),
            root=dict(type='path', default='/'),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    variables = dict((str(k), str(v)) for k, v in p['variables'].items())
    try:
        env_files.check_variables(variables)
        files = EnvFiles(p['root'], p['name'])
        if '/' in p['name'] or p['name'] in ('', '.', '..'):
            raise env_files.EnvError('name must be a plain file name')
        for unit in p['services']:
            files.service(unit)
    except env_files.EnvError as exc:
        fail(module, exc)
    if not os.path.isdir(p['root']):
        module.fail_json(msg='root %s is not a directory' % p['root'])

    conflicts = find_conflicts(files, variables) if p['state'] == 'present' else []
    if conflicts and p['conflict'] == 'fail':
        module.fail_json(msg='already set differently: %s' % '; '.join(
            '%(name)s=%(value)s in %(file)s' % c for c in conflicts), conflicts=conflicts)
    if conflicts and p['conflict'] == 'keep':
        for name in set(c['name'] for c in conflicts):
            variables.pop(name)

    changed_files, diffs = [], []
    for path, text in sorted(desired_contents(module, files, variables).items()):
        before = _text(path)
        if before == text:
            continue
        changed_files.append(path)
        diffs.append(dict(before_header=path, after_header=path, before=before or '', after=text or ''))
        if module.check_mode:
            continue
        if text is None:
            unlink(path)
        else:
            makedirs(os.path.dirname(path))
            atomic_write(path, text.encode('utf-8', 'surrogateescape'))

    systemd_dir = files.path('systemd')
    result = dict(
        changed=bool(changed_files), files=changed_files, conflicts=conflicts,
        systemd_changed=any(path.startswith(systemd_dir + os.sep) for path in changed_files),
        # Answered here rather than by a stat task of its own: one module call less per node.
        systemd_running=os.path.isdir(os.path.join(p['root'], 'run', 'systemd', 'system')))
    for c in conflicts:
        module.warn('%s was %s in %s; %s' % (c['name'], c['value'], c['file'], 'kept' if p['conflict'] == 'keep' else 'replaced'))
    if changed_files:
        result['msg'] = '%s %s in %s' % ('removed' if p['state'] == 'absent' else 'set', ', '.join(sorted(p['variables'])),
                                         ', '.join(changed_files))
    else:
        result['msg'] = 'every file already says what it should'
    if module._diff:
        result['diff'] = diffs
    module.exit_json(**result)


if __name__ == '__main__':
    main()
