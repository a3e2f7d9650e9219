#!/usr/bin/python
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: cache_info
short_description: Report the ModelScope models in a cache and which SDK generations can load them
version_added: 0.1.0
description:
  - Lists the models under a cache root (the value of C(MODELSCOPE_CACHE)) in the layout of every SDK
    generation, with per-model size, file count, revision and layout.
  - Compares each model with what was verified when it was downloaded or installed (the record under
    C(<cache_dir>/.modelseed/)), or with the SDK's C(.msc) metadata when there is no record, and reports
    missing, size-mismatched, modified and (with O(verify=full)) corrupt files.
  - With O(verify=full), checks each model in full against its record (written by M(modelseed.fleet.cache_install)
    or M(modelseed.fleet.modelscope_model)), or, without one, against the model's entry in the manifest of O(bundle)
    (every file there with its sha256 and nothing else, no file name a link out of the cache or a dangling one,
    and for SDKs up to 1.37 a C(.msc) (loaded without running any code) that lists exactly those files at the
    expected per-file revisions, a C(.mdl) naming the model and a well-formed C(.mv)). Each model gets
    RV(models[].verification) V(ok), V(failed) (with RV(models[].defects)) or, when neither a record nor a manifest
    describes it, V(unverifiable). Every link in the cache that is dangling or leads out of it is reported too.
  - Tells which SDK generations would load each model as a cache hit.
  - With O(bundle), also reads a bundle directory made by M(modelseed.fleet.cache_bundle), lists its models and tells
    whether it verifies (C(manifest.json) against C(SHA256SUMS), each tar's size, and with O(verify=full)
    each tar's sha256).
  - Uses only the Python standard library; never changes anything.
author:
  - modelseed.fleet team (@modelseed)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  cache_dir:
    description:
      - Cache root. Defaults to C(MODELSCOPE_CACHE) in the environment of the module.
      - Not needed when only O(bundle) is to be read.
    type: path
  bundle:
    description:
      - A bundle directory to report on, tars or tree form (M(modelseed.fleet.cache_bundle) C(format=tree)). The module
        fails when it is not a directory.
      - For a tree, V(quick) checks that each model directory holds exactly the members of its tar with their sizes,
        V(full) also every file's sha256.
    type: path
  names:
    description:
      - Only report these model ids (C(owner/name)).
    type: list
    elements: str
    default: []
  verify:
    description:
      - V(quick) compares sizes and modification times with the record.
      - V(full) also re-hashes every recorded file against its recorded sha256, and every tar of O(bundle), and checks
        each model in full against its record or the manifest of O(bundle) (see above).
    type: str
    default: quick
    choices: [quick, full]
seealso:
  - module: modelseed.fleet.modelscope_model
'''

EXAMPLES = r'''
- name: What is in the node's cache
  modelseed.fleet.cache_info:
    cache_dir: /var/cache/modelscope
  register: cache

- name: Is the bundle carried across the air gap intact?
  modelseed.fleet.cache_info:
    bundle: /mnt/usb/modelseed-bundle
    verify: full
  register: carried
  failed_when: not carried.bundle.verified

- name: Re-hash one model against what was verified at download time
  modelseed.fleet.cache_info:
    cache_dir: /var/cache/modelscope
    names: [Qwen/Qwen2.5-0.5B-Instruct]
    verify: full
  register: check
  failed_when: check.problems | length > 0

- name: Check a node's cache against the bundle it was seeded from; a model nothing describes fails too
  modelseed.fleet.cache_info:
    cache_dir: /var/cache/modelscope
    bundle: /srv/modelseed-bundle
    verify: full
  register: node_cache
  failed_when: node_cache.problems or node_cache.unverifiable
'''

RETURN = r'''
cache_dir:
  description: Cache root that was read.
  returned: unless only O(bundle) was read
  type: str
  sample: /var/cache/modelscope
models:
  description: One entry per model directory found.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Model id.
      type: str
      sample: Qwen/Qwen2.5-0.5B-Instruct
    layout:
      description: V(hub), V(models), V(snapshots), V(all) or V(legacy) (SDK 1.14 and older).
      type: str
    path:
      description: Directory holding the files.
      type: str
    revision:
      description: Revision the files were fetched for, when known.
      type: str
    commit:
      description: Commit the files were fetched at, when recorded.
      type: str
    files:
      description: Number of files, SDK metadata excluded.
      type: int
    bytes:
      description: Their total size.
      type: int
    recorded:
      description: Whether a verification record exists for the directory.
      type: bool
    missing:
      description: Files that should be there and are not.
      type: list
      elements: str
    size_mismatch:
      description: Files whose size differs from the verified size.
      type: list
      elements: str
    modified:
      description: Files changed on disk since they were verified (modification time), not re-hashed.
      type: list
      elements: str
    corrupt:
      description: Files whose sha256 differs from the verified one (O(verify=full) only).
      type: list
      elements: str
    not_in_msc:
      description: Files the SDK's C(.msc) metadata does not list, which SDKs up to 1.37 would download again.
      type: list
      elements: str
    complete:
      description: Whether every expected file is present, intact and described by the SDK metadata.
      type: bool
    shadowed:
      description:
        - A snapshot that SDK 1.38 and later never read, because a non-empty C(models/<owner>/<escaped name>)
          directory of the same model exists (an SDK up to 1.37 leaves one holding only C(.mdl) when it misses).
      type: bool
    sdk_generations:
      description: SDK version ranges that load the model as a cache hit.
      type: list
      elements: str
      sample: ['1.23-1.37', '>=1.38']
    verification:
      description:
        - With O(verify=full), V(ok) when the model matches its reference in full, V(failed) when it does not
          (see RV(models[].defects)), V(unverifiable) when neither a record nor the manifest of O(bundle) describes it.
        - V(null) with O(verify=quick).
      type: str
      sample: ok
    verified_against:
      description: V(record) or V(manifest), what the model was checked against; V(null) when it was not.
      type: str
    defects:
      description:
        - With O(verify=full), one line per defect, such as C(missing), C(unexpected file), C(corrupt (sha256 differs)),
          C(no .msc), C(unreadable .msc), C(.msc lists ... at revision ...), C(.mdl does not name ...), C(.mv is not ...),
          C(link out of the cache), C(dangling link).
      type: list
      elements: str
      sample: ['corrupt (sha256 differs): weights/model.bin', 'no .msc: SDKs up to 1.37 download every file again']
total_bytes:
  description: Size of all models found.
  returned: always
  type: int
bundle:
  description: The bundle of O(bundle).
  returned: when O(bundle) is set
  type: dict
  contains:
    path:
      description: Bundle directory.
      type: str
    verified:
      description: Whether the manifest matches C(SHA256SUMS) and every tar is there, at its size (and sha256).
      type: bool
    error:
      description: Why the manifest or C(SHA256SUMS) could not be trusted.
      type: str
    models:
      description: Each model with C(id), C(revision), C(commit), C(tar), C(tar_size), C(bytes), C(files), C(ok), C(problem).
      type: list
      elements: dict
    total_bytes:
      description: Size of the models' files.
      type: int
problems:
  description: One line per model that is not complete, and with O(verify=full) one per wrong link outside every model directory.
  returned: always
  type: list
  elements: str
unverifiable:
  description: With O(verify=full), the models (C(id (layout, path))) that neither a record nor the manifest of O(bundle) describes.
  returned: always
  type: list
  elements: str
bad_links:
  description: With O(verify=full), every link in the cache that leads out of it or nowhere, as C(<kind>, <path> -> <target>).
  returned: always
  type: list
  elements: str
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.check import check_bundle
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.reader import DirSource
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tree_reader import open_bundle
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.scan import describe_problem, scan
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.verify import bad_links, manifest_references
from ansible_collections.modelseed.fleet.plugins.module_utils._module.args import VERIFY_CHOICES, cache_root


def manifests_of(bundle_dir, report):
    """{model id: reference files} from a bundle that verified; {} from any other."""
    if not bundle_dir or report is None or report['error']:
        return {}
    try:
        return manifest_references(open_bundle(DirSource(bundle_dir)).models)
    except (BundleError, OSError):
        return {}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cache_dir=dict(type='path'),
            bundle=dict(type='path'),
            names=dict(type='list', elements='str', default=[]),
            verify=dict(type='str', default='quick', choices=VERIFY_CHOICES),
        ),
        supports_check_mode=True,
    )
    result = dict(changed=False, cache_dir=None, models=[], total_bytes=0, problems=[], unverifiable=[], bad_links=[])
    if module.params['bundle']:
        # A damaged bundle is reported; a path that holds none is a mistake in the task.
        if not os.path.isdir(module.params['bundle']):
            module.fail_json(msg='bundle %s is not a directory' % module.params['bundle'], **result)
        result['bundle'] = check_bundle(module.params['bundle'], module.params['verify'])
        if result['bundle']['error']:
            result['problems'].append('bundle %s: %s' % (module.params['bundle'], result['bundle']['error']))
        result['problems'].extend('bundle %s: %s' % (module.params['bundle'], m['problem'])
                                  for m in result['bundle']['models'] if m['problem'])
    if module.params['cache_dir'] or os.environ.get('MODELSCOPE_CACHE') or not module.params['bundle']:
        root = cache_root(module)
        full = module.params['verify'] == 'full' and os.path.isdir(root)
        links = bad_links(root) if full else {}
        manifests = manifests_of(module.params['bundle'], result.get('bundle')) if full else {}
        models = scan(root, module.params['verify'], module.params['names'], manifests, links) if os.path.isdir(root) else []
        result.update(cache_dir=root, models=models, total_bytes=sum(m['bytes'] for m in models))
        result['problems'].extend(p for p in (describe_problem(m) for m in models) if p)
        result['unverifiable'] = ['%s (%s, %s)' % (m['id'], m['layout'], m['path']) for m in models if m['verification'] == 'unverifiable']
        result['bad_links'] = [defect for _rel, defect in sorted(links.items())]
        tops = [os.path.relpath(m['path'], root).replace(os.sep, '/') + '/' for m in models]
        # Links inside a model directory are among its defects; the others (a dangling hub/ alias, say) are reported here.
        result['problems'].extend(defect for rel, defect in sorted(links.items()) if not any(rel.startswith(top) for top in tops))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
