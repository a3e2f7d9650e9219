# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bundle: what travels from a staging host to the nodes.

A bundle is a directory (or the same files under a URL)::

    manifest.json                          what the bundle holds, deterministic JSON
    SHA256SUMS                             sha256 of manifest.json and of every tar; `sha256sum -c` accepts it
    <owner>--<name>--<revision>.tar        one uncompressed tar per model

or, in tree form, the same manifest with each tar replaced by a directory holding exactly its members::

    manifest.json
    SHA256SUMS                             sha256 of manifest.json only (the files' sha256 are in the manifest)
    <owner>--<name>--<revision>/           the model's files at their repo paths, and its .msc/.mdl/.mv

Each tar holds one model's files at their repo paths (no layout prefix), the
directories leading to them, and the SDK metadata ``.msc``/``.mdl``/``.mv`` as
this collection generates it from the manifest. Entries are sorted by path;
owner and group are 0 with empty names, directories 0755, files 0644, every
mtime the commit's ``created_at``: the same files at the same commit always give
the same tar, whatever cache or layout they came from, and whatever its path, umask
or file times. manifest.json and SHA256SUMS follow from the model entries, of which
only ``source_layout`` depends on the staging cache.

A model entry of the manifest (checked by ``validate_model``)::

    id, revision            the model and the revision it was fetched for
    commit, created_at      the commit the files are at, and its time (unix seconds)
    source_layout           informational: the cache layout the staging host read it from
    tar, tar_size, tar_sha256
    bytes                   sum of the files' sizes
    files                   [{path, size, sha256, revision}], sorted by path; revision is the
                            per-file commit the SDK's ``.msc`` lists
    metadata                [{path, size, sha256}] of the ``.msc``/``.mdl``/``.mv`` in the tar,
                            exactly ``metadata_list(model)`` (they follow from the fields above)
    base                    only in a delta bundle (see delta.py): {revision, commit, files}, the installed
                            model the delta applies to and the paths of ``files`` taken from it, which the
                            tar does not hold (``carried_files`` are the ones it holds)

A delta bundle's manifest also names the manifest it was made against, ``base_manifest_sha256``.

``tar_members(model)`` is the complete, ordered member list of a model's tar; an
installer must accept no other member.
"""


import hashlib
import json
import os
import re

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import InvalidName, check_revision, split_model_id
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import check_relative_path
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.hashing import sha256_file
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import parent_dirs

FORMAT = 'modelseed.fleet/bundle'
VERSION = 1
MANIFEST = 'manifest.json'
SUMS = 'SHA256SUMS'
DIR_MODE = 0o755
FILE_MODE = 0o644
# Refuse manifests that are absurd rather than allocate for them.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_FILES_PER_MODEL = 1000000
_SHA256 = re.compile(r'^[0-9a-f]{64}\Z')
_SUMS_LINE = re.compile(r'^([0-9a-f]{64}) [ *](.+)\Z')


class BundleError(ModelseedError):
    pass


def tar_name(model_id, revision):
    owner, name = split_model_id(model_id)
    return '%s--%s--%s.tar' % (owner, name, revision)


def tree_dir_name(model):
    """The directory of a model in a tree-form bundle: its tar's name without ``.tar``."""
    return tar_name(model['id'], model['revision'])[:-len('.tar')]


def metadata_entries(model):
    """[(name, bytes)] of the SDK metadata a model's tar carries at its top."""
    files = sdk_metadata.expected_files(model['id'], model['revision'], model['created_at'],
                                        [(f['path'], f['revision']) for f in model['files']])
    return sorted(files.items())


def metadata_list(model):
    """The manifest's ``metadata`` list: path, size and sha256 of each SDK metadata file in the tar."""
    return [{'path': name, 'size': len(data), 'sha256': hashlib.sha256(data).hexdigest()}
            for name, data in metadata_entries(model)]


def tar_members(model):
    """[(name, kind, size)] of every member of a model's tar, in tar order.

    kind is 'dir' (the parent directories of the listed files, no trailing
    slash here, ``name/`` in the tar), 'file' (the ``files`` list) or 'metadata'
    (the ``metadata`` list, regular files at the top). Sorted by name.
    """
    carried = carried_files(model)
    members = dict((name, ('dir', 0)) for name in parent_dirs(f['path'] for f in carried))
    for entry in carried:
        members[entry['path']] = ('file', entry['size'])
    for entry in model['metadata']:
        members[entry['path']] = ('metadata', entry['size'])
    return [(name, kind, size) for name, (kind, size) in sorted(members.items())]


def carried_files(model):
    """The ``files`` entries a model's tar holds: all of them, but in a delta those its ``base`` lends."""
    lent = set(model.get('base', {}).get('files', ()))
    return [f for f in model['files'] if f['path'] not in lent]


def manifest_bytes(models, base_manifest_sha256=None):
    """Deterministic manifest.json for a list of model entries (see validate_model for their shape); a delta
    bundle's names the sha256 of the manifest it was made against."""
    doc = {
        'format': FORMAT,
        'version': VERSION,
        'models': sorted(models, key=lambda m: (m['id'], m['revision'])),
        'total_bytes': sum(m['bytes'] for m in models),
    }
    if base_manifest_sha256 is not None:
        doc['base_manifest_sha256'] = base_manifest_sha256
    return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + '\n').encode('utf-8')


def sums_bytes(entries):
    """SHA256SUMS text for [(sha256, relative file name)], in the format `sha256sum -c` reads."""
    return ''.join('%s  %s\n' % (sha, name) for name, sha in sorted((n, s) for s, n in entries)).encode('utf-8')


def top_files(directory):
    """{name: sha256} of the files at the top of a bundle directory that travel without the models: manifest.json,
    SHA256SUMS and the signatures (*.sig). A node holding the same ones holds the same bundle description."""
    names = [MANIFEST, SUMS] + sorted(n for n in os.listdir(directory) if n.endswith('.sig'))
    return dict((name, sha256_file(os.path.join(directory, name))) for name in names
                if os.path.isfile(os.path.join(directory, name)))


def parse_sums(data):
    """{file name: sha256} from SHA256SUMS bytes; raises BundleError on anything malformed."""
    sums = {}
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise BundleError('%s is not UTF-8 text' % SUMS)
    for number, line in enumerate(text.splitlines(), 1):
        match = _SUMS_LINE.match(line)
        if not match:
            raise BundleError('%s line %d is not "<sha256>  <file>"' % (SUMS, number))
        name = match.group(2)
        if '/' in name or name in ('.', '..') or name in sums:
            raise BundleError('%s line %d names %r, which is not a unique file of the bundle' % (SUMS, number, name))
        sums[name] = match.group(1)
    if MANIFEST not in sums:
        raise BundleError('%s does not cover %s' % (SUMS, MANIFEST))
    return sums


def _require(condition, message):
    if not condition:
        raise BundleError('manifest: ' + message)


def _int(value, what):
    _require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63, '%s must be a non-negative integer' % what)
    return value


def _sha(value, what):
    _require(isinstance(value, str) and _SHA256.match(value), '%s must be a lowercase sha256' % what)
    return value


def validate_model(model):
    """Check one manifest model entry; returns it. Every path is a safe relative path."""
    _require(isinstance(model, dict), 'a model entry is not an object')
    try:
        split_model_id(model.get('id'))
        check_revision(model.get('revision'))
    except InvalidName as exc:
        raise BundleError('manifest: %s' % exc)
    label = '%s@%s' % (model['id'], model['revision'])
    _require(isinstance(model.get('commit'), str) and model['commit'], '%s has no commit' % label)
    _int(model.get('created_at'), '%s created_at' % label)
    _require(model.get('tar') == tar_name(model['id'], model['revision']), '%s names tar %r' % (label, model.get('tar')))
    _int(model.get('tar_size'), '%s tar_size' % label)
    _sha(model.get('tar_sha256'), '%s tar_sha256' % label)
    files = model.get('files')
    _require(isinstance(files, list) and 0 < len(files) <= MAX_FILES_PER_MODEL, '%s has no file list' % label)
    seen = set()
    for entry in files:
        _require(isinstance(entry, dict), '%s has a file entry that is not an object' % label)
        try:
            check_relative_path(entry.get('path'))
        except ValueError as exc:
            raise BundleError('manifest: %s: %s' % (label, exc))
        _require(entry['path'] not in seen, '%s lists %s twice' % (label, entry['path']))
        seen.add(entry['path'])
        _int(entry.get('size'), '%s %s size' % (label, entry['path']))
        _sha(entry.get('sha256'), '%s %s sha256' % (label, entry['path']))
        _require(isinstance(entry.get('revision'), str), '%s %s revision must be a string' % (label, entry['path']))
    _require(model.get('bytes') == sum(f['size'] for f in files), '%s bytes is not the sum of its file sizes' % label)
    clashes = sorted(parent_dirs(seen) & seen)
    _require(not clashes, '%s lists %s both as a file and as a directory' % (label, clashes[0] if clashes else ''))
    _require(model.get('metadata') == metadata_list(model), '%s metadata does not describe the .msc/.mdl/.mv its files imply' % label)
    if 'base' in model:
        _validate_base(model['base'], seen, label)
    return model


def _validate_base(base, paths, label):
    """A delta's base: the revision and commit installed before, and the sorted paths of files it lends."""
    _require(isinstance(base, dict), '%s base is not an object' % label)
    try:
        check_revision(base.get('revision'))
    except InvalidName as exc:
        raise BundleError('manifest: %s base: %s' % (label, exc))
    _require(isinstance(base.get('commit'), str) and base['commit'], '%s base has no commit' % label)
    lent = base.get('files')
    _require(isinstance(lent, list) and all(isinstance(p, str) for p in lent), '%s base files must be a list of paths' % label)
    _require(lent == sorted(set(lent)), '%s base files must be sorted and listed once' % label)
    _require(set(lent) <= paths, '%s base lends files the model does not list' % label)


def parse_manifest(data):
    """The manifest as a dict, every model validated; raises BundleError with the reason."""
    _require(len(data) <= MAX_MANIFEST_BYTES, 'larger than %d bytes' % MAX_MANIFEST_BYTES)
    try:
        doc = json.loads(data.decode('utf-8'))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError('manifest: not valid JSON: %s' % exc)
    except RecursionError:
        # json recurses per nesting level: a crafted manifest must not crash the module.
        raise BundleError('manifest: not valid JSON: nested too deeply')
    _require(isinstance(doc, dict) and doc.get('format') == FORMAT, 'not a %s manifest' % FORMAT)
    _require(doc.get('version') == VERSION, 'version %r is not supported (this collection reads %d)' % (doc.get('version'), VERSION))
    models = doc.get('models')
    _require(isinstance(models, list) and models, 'lists no models')
    base = doc.get('base_manifest_sha256')
    _require(base is None or (isinstance(base, str) and _SHA256.match(base)), 'base_manifest_sha256 must be a lowercase sha256')
    keys = set()
    for model in models:
        validate_model(model)
        # A tar stores its files uncompressed: claims beyond its size are lies, refused before any space is reserved.
        carried = sum(f['size'] for f in carried_files(model))
        _require(carried <= model['tar_size'], '%s@%s lists %d bytes of files, more than its %d-byte tar can hold' % (
            model['id'], model['revision'], carried, model['tar_size']))
        _require(model['tar'] not in keys, 'lists %s twice' % model['tar'])
        keys.add(model['tar'])
    return doc


def model_label(model):
    """``<model id>@<revision>`` of a manifest's model entry, as messages name it."""
    return '%s@%s' % (model['id'], model['revision'])
