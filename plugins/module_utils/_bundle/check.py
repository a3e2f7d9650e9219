# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a bundle directory is intact, without installing it."""

import os

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.reader import DirSource
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tree_reader import TreeBundle, open_bundle
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_file


def check_bundle(path, verify='quick'):
    """{path, verified, error, models, total_bytes}: the manifest against SHA256SUMS, each tar's size (in tree form,
    each model directory's members and sizes), and with ``verify='full'`` each tar's sha256 (each file's)."""
    report = {'path': path, 'verified': False, 'error': None, 'models': [], 'total_bytes': 0}
    try:
        bundle = open_bundle(DirSource(path))
    except (BundleError, OSError) as exc:
        report['error'] = str(exc)
        return report
    for model in bundle.models:
        tar = os.path.join(path, model['tar'])
        problem = None
        if isinstance(bundle, TreeBundle):
            problem = _tree_problem(bundle, model, verify)
        elif not os.path.isfile(tar):
            problem = '%s is missing' % model['tar']
        elif os.path.getsize(tar) != model['tar_size']:
            problem = '%s has %d bytes, the manifest says %d' % (model['tar'], os.path.getsize(tar), model['tar_size'])
        elif verify == 'full' and sha256_file(tar) != model['tar_sha256']:
            problem = '%s does not match its sha256' % model['tar']
        report['models'].append({
            'id': model['id'], 'revision': model['revision'], 'commit': model['commit'], 'tar': model['tar'],
            'tar_size': model['tar_size'], 'bytes': model['bytes'], 'files': len(model['files']),
            'ok': problem is None, 'problem': problem})
    report['total_bytes'] = bundle.manifest['total_bytes']
    report['verified'] = all(m['ok'] for m in report['models'])
    return report


def _tree_problem(bundle, model, verify):
    try:
        bundle.judge(model)
        if verify == 'full':
            bundle.verify_files(model)
    except (BundleError, OSError) as exc:
        return str(exc)
    return None
