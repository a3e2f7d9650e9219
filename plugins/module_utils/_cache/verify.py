# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check a model directory in full against what it should hold: the record written when it was downloaded or
installed, or the model's entry in a bundle manifest.

A directory passes when it holds exactly the reference's files with their sha256, no file name is a link out
of the cache or a dangling one, and in the layouts of SDKs up to 1.37 its ``.msc`` (loaded without running
any code) lists exactly those files at the reference's per-file revisions, beside a ``.mdl`` naming the model
and a well-formed ``.mv``. SDKs up to 1.37 never list ``.gitattributes``/``.gitignore``: those may be absent there.
Without a reference nothing says which bytes are right: the model is ``unverifiable``, never ``ok``.
"""


import os
import re
import stat

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import escape_name
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import STATE_DIR
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_file

OK, FAILED, UNVERIFIABLE = 'ok', 'failed', 'unverifiable'
METADATA_LAYOUTS = ('hub', 'models', 'all', 'legacy')
UNLISTED_BY_OLD_SDKS = ('.gitattributes', '.gitignore')
MV_TEXT = re.compile(r'^Revision:[^,\s]+,CreatedAt:-?\d+$')


def inside(root_real, path_real):
    return path_real == root_real or path_real.startswith(root_real.rstrip(os.sep) + os.sep)


def link_defect(root, path):
    """Why the link at ``path`` is wrong (out of the cache, dangling), or None."""
    target = os.readlink(path)
    if not inside(os.path.realpath(root), os.path.realpath(path)):
        return 'link out of the cache: %s -> %s' % (os.path.relpath(path, root), target)
    if not os.path.exists(path):
        return 'dangling link: %s -> %s' % (os.path.relpath(path, root), target)
    return None


def bad_links(root):
    """{relative link path: defect} for every wrong link in the cache, scratch of ours aside."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d != STATE_DIR]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                defect = link_defect(root, path)
                if defect:
                    found[os.path.relpath(path, root).replace(os.sep, '/')] = defect
    return found


def _entries(top):
    """({relative path: path} of files (regular, or links to one), [defects of other entries])."""
    files, defects = {}, []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top).replace(os.sep, '/')
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) or (stat.S_ISLNK(mode) and os.path.isfile(path)):
                files[rel] = path
            elif stat.S_ISLNK(mode) and os.path.isdir(path):
                defects.append('directory link inside the model directory: %s' % rel)
            elif not stat.S_ISDIR(mode) and not stat.S_ISLNK(mode):
                defects.append('not a regular file: %s' % rel)
    return files, defects


def _optional(layout, path):
    return layout in METADATA_LAYOUTS and path.rsplit('/', 1)[-1] in UNLISTED_BY_OLD_SDKS


def verify_model(root, layout, top, model_id, reference, links):
    """Defects of the model directory ``top`` (one line each) against ``reference``: {path: {size, sha256, revision}}.

    ``links`` is ``bad_links(root)``: a wrong link inside ``top`` is reported as such, not hashed.
    """
    files, defects = _entries(top)
    prefix = os.path.relpath(top, root).replace(os.sep, '/') + '/'
    mine = dict((rel[len(prefix):], defect) for rel, defect in links.items() if rel.startswith(prefix))
    defects.extend(defect for _rel, defect in sorted(mine.items()))
    metadata = {}
    if layout in METADATA_LAYOUTS:
        metadata = dict((name, files.pop(name)) for name in sdk_metadata.METADATA_FILES if name in files and name not in mine)
    for rel, path in sorted(files.items()):
        entry = reference.get(rel)
        if rel in mine:
            continue
        if entry is None:
            defects.append('unexpected file: %s' % rel)
        elif 'size' in entry and os.path.getsize(path) != entry['size']:
            defects.append('size mismatch: %s' % rel)
        elif sha256_file(path) != entry.get('sha256'):
            defects.append('corrupt (sha256 differs): %s' % rel)
    for rel in sorted(set(reference) - set(files) - set(mine)):
        if not _optional(layout, rel):
            defects.append('missing: %s' % rel)
    if layout in METADATA_LAYOUTS:
        defects.extend(_metadata_defects(layout, model_id, metadata, reference, files))
    return defects


def _metadata_defects(layout, model_id, metadata, reference, files):
    defects = []
    if sdk_metadata.MSC not in metadata:
        defects.append('no .msc: SDKs up to 1.37 download every file again')
    else:
        entries, why = read_msc_strict(metadata[sdk_metadata.MSC])
        if entries is None:
            defects.append('unreadable .msc: %s' % why)
        else:
            for rel in sorted(set(reference) - set(entries)):
                if not _optional(layout, rel) or rel in files:
                    defects.append('.msc does not list %s' % rel)
            for rel, revision in sorted(entries.items()):
                if rel not in reference or rel not in files:
                    defects.append('.msc lists %s, which is not a file of the model here' % rel)
                elif reference[rel].get('revision') and revision != reference[rel]['revision']:
                    defects.append('.msc lists %s at revision %s, expected %s' % (rel, revision, reference[rel]['revision']))
                elif not revision:
                    defects.append('.msc lists %s with an empty revision, which matches any commit' % rel)
    if sdk_metadata.MDL in metadata:
        owner, name = model_id.split('/', 1)
        names = ('%s/%s' % (owner, escape_name(name)), '%s/%s' % (owner, name)) if layout == 'legacy' else ('%s/%s' % (owner, escape_name(name)),)
        try:
            mdl = sdk_metadata.load_pickle(_read(metadata[sdk_metadata.MDL]))
        except Exception:  # any malformed pickle is junk
            mdl = None
        if not isinstance(mdl, dict) or mdl.get('id') not in names:
            defects.append('.mdl does not name %s' % model_id)
    if sdk_metadata.MV in metadata:
        text = _read(metadata[sdk_metadata.MV]).decode('ascii', 'replace')
        if not MV_TEXT.match(text):
            defects.append('.mv is not Revision:<revision>,CreatedAt:<unix time>')
    return defects


def read_msc_strict(path):
    """({Path: Revision}, '') from a .msc, or (None, why) when an SDK could not use it."""
    try:
        entries = sdk_metadata.load_pickle(_read(path))
    except Exception as exc:  # any malformed pickle or unreadable file
        return None, ('%s: %s' % (exc.__class__.__name__, exc))[:120]
    if not isinstance(entries, list):
        return None, 'a %s, not a list' % type(entries).__name__
    out = {}
    for entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get('Path'), str) and isinstance(entry.get('Revision'), str)):
            return None, 'an entry that is not {Path, Revision}'
        out[entry['Path']] = entry['Revision']
    return out, ''


def _read(path):
    with open(path, 'rb') as handle:
        return handle.read(64 << 20)


def manifest_references(models):
    """{model id: {path: {size, sha256, revision}}} from a bundle manifest's models."""
    references = {}
    for model in models:
        references[model['id']] = dict(
            (f['path'], {'size': f['size'], 'sha256': f['sha256'], 'revision': f.get('revision')}) for f in model['files'])
    return references
