# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Delta bundles: a model's new version that carries only the files the other side does not already have.

Writing, against the manifest of a bundle the other side installed (the base manifest): a model the base manifest
also holds gets a ``base`` in its manifest entry, ``{revision, commit, files}``, where ``files`` are the paths whose
size and sha256 are the same in both. Its tar (or tree directory) then holds only the other files and the SDK
metadata (``format.carried_files``); ``files`` still lists every file of the new version. A model the base does not
hold travels whole. The manifest names the base manifest's sha256.

Installing: the base must be installed in the target layout exactly, the record of ``<id>@<base revision>`` at the
base commit, with every lent file as it was verified (size, sha256 and modification time; re-hashed with
verify=full). Else the model is refused before anything is staged. The carried files are streamed and hashed as in
a full bundle; the lent ones are hard-linked from the base into the staging directory (the very inodes checked),
copied and hashed where a link cannot be made; the model then swaps in whole, as any other.
"""

import hashlib
import os
import posixpath
import stat

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tree_reader import _copy_into as copy_into
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import absolute, model_dir
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import join
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import load_record
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_files
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import lstat_or_none, read_bytes

SHOWN = 3


class DeltaBaseError(BundleError):
    """The base a delta names is not what this cache holds."""


# -- writing -------------------------------------------------------------------------


def read_base_manifest(path):
    """({model id: [model entries]}, sha256) of the manifest.json at ``path``."""
    data = read_bytes(path, bundle_format.MAX_MANIFEST_BYTES + 1)
    if data is None:
        raise BundleError('base_manifest %s does not exist: give the manifest.json of the bundle the other side installed' % path)
    try:
        doc = bundle_format.parse_manifest(data)
    except BundleError as exc:
        raise BundleError('base_manifest %s: %s' % (path, exc))
    models = {}
    for model in doc['models']:
        models.setdefault(model['id'], []).append(model)
    return models, hashlib.sha256(data).hexdigest()


def rebase(entry, base_models):
    """``entry`` (a manifest entry without tar fields) as a delta on its model in ``base_models``, or unchanged
    when the base does not hold the model. The base is the same revision, else the model's only one."""
    candidates = base_models.get(entry['id'], [])
    if not candidates:
        return entry
    same = [m for m in candidates if m['revision'] == entry['revision']]
    if not same and len(candidates) > 1:
        raise BundleError('%s: the base manifest holds revisions %s of %s and not %s, so which one the other side has '
                          'installed is not known; make the delta against a manifest that holds one' % (
                              bundle_format.model_label(entry), ', '.join(sorted(m['revision'] for m in candidates)),
                              entry['id'], entry['revision']))
    base = (same or candidates)[0]
    known = dict((f['path'], (f['size'], f['sha256'])) for f in base['files'])
    lent = [f['path'] for f in entry['files'] if known.get(f['path']) == (f['size'], f['sha256'])]
    return dict(entry, base={'revision': base['revision'], 'commit': base['commit'], 'files': lent})


def carried_bytes(model):
    return sum(f['size'] for f in bundle_format.carried_files(model))


def describe(model):
    """``delta on <revision> commit <commit>: 2 of 9 file(s) carried`` for messages."""
    base = model['base']
    return 'delta on %s commit %s: %d of %d file(s) carried, the others taken from it' % (
        base['revision'], base['commit'][:12], len(model['files']) - len(base['files']), len(model['files']))


# -- installing ----------------------------------------------------------------------


def _identity(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def find_base(root, layout, model, verify='quick', workers=4):
    """(directory, {path: identity}) of the installed base of the delta ``model`` in ``layout`` of the cache ``root``:
    the record there must be the base's model, revision and commit, and vouch for every file the delta lends as it is
    on disk now. Raises DeltaBaseError saying what is there instead.

    A run killed while it replaced that directory leaves it without a record (the record goes first, so that none
    ever describes other files): such a directory is accepted when every file the delta takes from it has the
    manifest's sha256, hashed here."""
    base = model['base']
    label = bundle_format.model_label(model)
    rel = model_dir(layout, model['id'], base['revision'])
    where = absolute(root, rel)
    record = load_record(root, rel)
    top = lstat_or_none(where)
    refusal = '%s is a delta bundle on %s@%s commit %s' % (label, model['id'], base['revision'], base['commit'][:12])
    remedy = 'nothing was changed; install the full bundle, or make the delta against the manifest of what this cache holds'
    if top is None or not stat.S_ISDIR(top.st_mode):
        raise DeltaBaseError('%s, which is not installed in layout %s of %s (%s is missing); %s' % (refusal, layout, root, rel, remedy))
    files = dict((f['path'], f) for f in model['files'])
    if not record.files:
        identities, changed = _hashed(where, base['files'], files, workers)
        why = 'has no record of a verified install, and %d file(s) the delta takes from it differ from the manifest' % len(changed)
    else:
        facts = record.data
        if (facts.get('model'), facts.get('revision'), facts.get('commit')) != (model['id'], base['revision'], base['commit']):
            raise DeltaBaseError('%s, but %s holds %s@%s commit %s; %s' % (
                refusal, rel, facts.get('model'), facts.get('revision'), str(facts.get('commit'))[:12], remedy))
        identities, changed = _vouched(where, base['files'], files, record)
        if not changed and verify == 'full':
            changed = _hashed(where, base['files'], files, workers)[1]
        why = 'has %d file(s) the delta takes from it missing or changed since they were verified' % len(changed)
    if changed:
        raise DeltaBaseError('%s, and %s %s, for example %s; %s' % (refusal, rel, why, ', '.join(changed[:SHOWN]), remedy))
    return where, identities


def _vouched(where, paths, files, record):
    """({path: identity}, [changed paths]) of the files ``paths`` of ``where`` as its record vouches for them."""
    identities, changed = {}, []
    for path in paths:
        st = lstat_or_none(join(where, path))
        if st is None or not stat.S_ISREG(st.st_mode) or not record.matches(path, files[path]['size'], files[path]['sha256'], st):
            changed.append(path)
        else:
            identities[path] = _identity(st)
    return identities, changed


def _hashed(where, paths, files, workers):
    """({path: identity}, [changed paths]) of the files ``paths`` of ``where``, each hashed against ``files``."""
    digests = sha256_files([join(where, path) for path in paths], workers)
    identities, changed = {}, []
    for path, digest in zip(paths, digests):
        st = lstat_or_none(join(where, path))
        if digest != files[path]['sha256'] or st is None or not stat.S_ISREG(st.st_mode):
            changed.append(path)
        else:
            identities[path] = _identity(st)
    return identities, changed


def lend(base_dir, identities, model, sink):
    """Put the files the delta ``model`` takes from its base into ``sink`` (install.StagingSink): a hard link to the
    inode find_base checked, which keeps its time (the base's record holds it), or a copy hashed on the way."""
    label = bundle_format.model_label(model)
    files = dict((f['path'], f) for f in model['files'])
    for rel in model['base']['files']:
        parent = posixpath.dirname(rel)
        if parent:
            sink.directory(parent)
        source, target = join(base_dir, rel), join(sink.top, rel)
        try:
            os.link(source, target, follow_symlinks=False)
        except OSError:
            # Another file system or protected_hardlinks: the bytes are copied, and checked against the manifest.
            copy_into(sink, source, rel, files[rel], model['created_at'], '%s: %r in %s' % (label, rel, base_dir))
            continue
        st = os.lstat(target)
        if _identity(st) != identities[rel]:
            raise DeltaBaseError('%s: %r of the base in %s changed after it was checked' % (label, rel, base_dir))
        mode = sink.perms.file_mode(rel)
        if not sink.perms.ok(st, mode):
            sink.perms.apply(target, mode)
