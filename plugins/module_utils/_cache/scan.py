# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find the models in a cache root, in every SDK generation's layout, and judge them."""

import os

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata
from ansible_collections.modelseed.fleet.plugins.module_utils._cache import verify as cache_verify
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import GENERATIONS
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import STATE_DIR, load_record
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_file
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import read_bytes

# Top-level names in a cache root that never hold models.
RESERVED = ('hub', 'models', 'datasets', STATE_DIR, '.lock', '._____temp', 'temp', 'ast_indexer')
LEGACY = '<=1.14'


def _dirs(path):
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False) and not e.name.startswith('.'))
    except (FileNotFoundError, NotADirectoryError):
        return []


def find_models(root):
    """[(layout, relative dir, model id)] for every model directory under ``root``."""
    found = []
    hub_links = set()
    for owner in _dirs(os.path.join(root, 'hub')):
        for entry in sorted(os.listdir(os.path.join(root, 'hub', owner))):
            rel = 'hub/%s/%s' % (owner, entry)
            path = os.path.join(root, rel)
            if os.path.islink(path):
                hub_links.add(os.path.realpath(path))
            elif os.path.isdir(path) and entry not in ('models', 'datasets'):
                found.append(('hub', rel, '%s/%s' % (owner, entry.replace('___', '.'))))
    for owner in _dirs(os.path.join(root, 'models')):
        if '--' in owner:
            model_id = owner.replace('--', '/', 1)
            for rev in _dirs(os.path.join(root, 'models', owner, 'snapshots')):
                found.append(('snapshots', 'models/%s/snapshots/%s' % (owner, rev), model_id))
            continue
        for name in _dirs(os.path.join(root, 'models', owner)):
            rel = 'models/%s/%s' % (owner, name)
            layout = 'all' if os.path.realpath(os.path.join(root, rel)) in hub_links else 'models'
            found.append((layout, rel, '%s/%s' % (owner, name.replace('___', '.'))))
    for owner in _dirs(root):
        if owner in RESERVED:
            continue
        for name in _dirs(os.path.join(root, owner)):
            if os.path.isfile(os.path.join(root, owner, name, sdk_metadata.MSC)):
                found.append(('legacy', '%s/%s' % (owner, name), '%s/%s' % (owner, name)))
    return found


def _walk_files(top):
    """{relative path: lstat} of regular files below ``top``, without the SDK metadata at its top."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top).replace(os.sep, '/')
            if rel in sdk_metadata.METADATA_FILES:
                continue
            st = os.lstat(path)
            if os.path.stat.S_ISREG(st.st_mode):
                files[rel] = st
    return files


def inspect(root, layout, rel, model_id, verify='quick', manifests=None, links=None):
    """Facts about one model directory and the SDK generations that read it as a hit.

    With ``verify='full'`` the directory is also checked in full (cache_verify) against its record, else
    against ``manifests[model id]`` (files of a bundle manifest), else reported unverifiable.
    """
    top = os.path.join(root, *rel.split('/'))
    on_disk = _walk_files(top)
    record = load_record(root, rel)
    model_id = record.data.get('model') or model_id
    expected = record.files or None
    msc = None
    if layout != 'snapshots':
        msc = sdk_metadata.read_msc(read_bytes(os.path.join(top, sdk_metadata.MSC)) or b'')
        if expected is None and msc:
            expected = dict((p, {}) for p in msc)
    missing, mismatched, modified, corrupt = [], [], [], []
    for path, entry in sorted((expected or {}).items()):
        st = on_disk.get(path)
        if st is None:
            missing.append(path)
        elif 'size' in entry and st.st_size != entry['size']:
            mismatched.append(path)
        elif verify == 'full' and entry.get('sha256'):
            if sha256_file(os.path.join(top, *path.split('/'))) != entry['sha256']:
                corrupt.append(path)
        elif 'mtime_ns' in entry and st.st_mtime_ns != entry['mtime_ns']:
            modified.append(path)
    unlisted = sorted(set(expected or ()) - set(msc)) if msc is not None else []
    if expected is None:
        # Nothing says what the model should hold: SDK >= 1.38 takes any non-empty snapshot.
        complete = layout == 'snapshots' and bool(on_disk)
    else:
        complete = not (missing or mismatched or corrupt or unlisted)
    verification, against, defects = None, None, []
    if verify == 'full':
        reference, against = (record.files, 'record') if record.files else ((manifests or {}).get(model_id), 'manifest')
        if reference is None:
            verification, against = cache_verify.UNVERIFIABLE, None
        else:
            defects = cache_verify.verify_model(root, layout, top, model_id, reference, links if links is not None else cache_verify.bad_links(root))
            verification = cache_verify.FAILED if defects else cache_verify.OK
            complete = complete and not defects
    return {
        'id': model_id,
        'layout': layout,
        'path': top,
        'revision': record.data.get('revision') or _mv_revision(top) or (rel.rsplit('/', 1)[-1] if layout == 'snapshots' else None),
        'commit': record.data.get('commit'),
        'files': len(on_disk),
        'bytes': sum(st.st_size for st in on_disk.values()),
        'recorded': bool(record.files),
        'missing': missing,
        'size_mismatch': mismatched,
        'modified': modified,
        'corrupt': corrupt,
        'not_in_msc': unlisted,
        'complete': complete,
        'sdk_generations': _generations(layout) if complete else [],
        'shadowed': False,
        'verification': verification,
        'verified_against': against,
        'defects': defects,
    }


def _generations(layout):
    if layout == 'legacy':
        return [LEGACY]
    if layout == 'all':
        return [GENERATIONS['hub'], GENERATIONS['models'], GENERATIONS['snapshots']]
    if layout == 'models':
        return [GENERATIONS['models'], GENERATIONS['snapshots']]
    return [GENERATIONS[layout]]


def _mv_revision(top):
    raw = read_bytes(os.path.join(top, sdk_metadata.MV), 4096)
    if not raw:
        return None
    text = raw.decode('utf-8', 'replace').strip()
    if text.startswith('Revision:'):
        return text.split(',')[0][len('Revision:'):]
    return text or None


def scan(root, verify='quick', names=None, manifests=None, links=None):
    """[model facts] for every model under ``root`` (only ``names`` when given); see ``inspect``.

    ``links``: ``cache_verify.bad_links(root)`` when the caller has it already.
    """
    found = [m for m in find_models(root) if not names or m[2] in names]
    if links is None:
        links = cache_verify.bad_links(root) if verify == 'full' else {}
    models = [inspect(root, layout, rel, model_id, verify, manifests, links) for layout, rel, model_id in found]
    # SDK >= 1.38 takes any non-empty models/<owner>/<escaped name> over the model's snapshots,
    # even one an older SDK left holding nothing but .mdl after a miss.
    shadowing = set(m['id'] for m in models if m['layout'] in ('models', 'all') and os.listdir(m['path']))
    for m in models:
        if m['layout'] == 'snapshots' and m['id'] in shadowing:
            m['sdk_generations'] = []
            m['shadowed'] = True
    return models


MAX_DEFECTS_SHOWN = 10


def describe_problem(model):
    """One line on what keeps a model of ``scan`` from being complete, or None when nothing does."""
    issues = []
    for key in ('missing', 'size_mismatch', 'corrupt', 'not_in_msc', 'modified'):
        if model[key]:
            issues.append('%d %s' % (len(model[key]), key.replace('_', ' ')))
    if model['shadowed']:
        issues.append('hidden from SDK >= 1.38 by the non-empty models/ directory of the same model')
    if model['defects']:
        shown = model['defects'][:MAX_DEFECTS_SHOWN]
        more = len(model['defects']) - len(shown)
        issues.append('checked against its %s: %s%s' % (model['verified_against'], '; '.join(shown), ' and %d more' % more if more else ''))
    if not model['complete'] and not issues:
        issues.append('no metadata or record describes its files')
    return '%s (%s, %s): %s' % (model['id'], model['layout'], model['path'], ', '.join(issues)) if issues else None
