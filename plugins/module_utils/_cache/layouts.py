# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where each SDK generation looks for a model inside MODELSCOPE_CACHE.

Every path here is relative to the cache root, the value of MODELSCOPE_CACHE:

- ``hub``: ``hub/<owner>/<escaped name>`` with .msc/.mdl/.mv (SDK 1.15 - 1.22)
- ``models``: ``models/<owner>/<escaped name>`` with .msc/.mdl/.mv (1.23 - 1.37;
  SDK >= 1.38 reuses this directory when it exists)
- ``snapshots``: ``models/<owner>--<name>/snapshots/<revision>`` (>= 1.38)
- ``all``: the ``models`` directory plus a relative link ``hub/<owner>/<escaped
  name>`` pointing at it, which every generation from 1.15 on reads as a hit.
"""


import os
import posixpath

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import escape_name, split_model_id

LAYOUTS = ('hub', 'models', 'snapshots', 'all')
LAYOUT_CHOICES = LAYOUTS + ('auto',)
# Layouts whose SDKs need .msc/.mdl/.mv next to the files.
METADATA_LAYOUTS = ('hub', 'models', 'all')

# SDK releases, as (first, last) minor versions of 1.x, reading each layout.
GENERATIONS = {
    'hub': '1.15-1.22',
    'models': '1.23-1.37',
    'snapshots': '>=1.38',
}
SERVED_BY = {
    'hub': ('hub',),
    'models': ('models', 'snapshots'),
    'snapshots': ('snapshots',),
    'all': ('hub', 'models', 'snapshots'),
}


def model_dir(layout, model_id, revision):
    """Relative path of the real directory holding the model's files."""
    owner, name = split_model_id(model_id)
    if layout == 'hub':
        return posixpath.join('hub', owner, escape_name(name))
    if layout in ('models', 'all'):
        return posixpath.join('models', owner, escape_name(name))
    if layout == 'snapshots':
        return posixpath.join('models', '%s--%s' % (owner, name), 'snapshots', revision)
    raise ValueError('unknown layout %r' % (layout,))


def alias_links(layout, model_id):
    """[(relative link path, relative target)] a layout adds beside the real directory.

    ``all`` links ``hub/<owner>/<escaped>`` to the ``models`` directory. For a dotted
    name, SDKs 1.20 - 1.37 link ``<owner>/<name.with.dots>`` to the escaped directory
    with an ABSOLUTE link, which breaks when the cache moves; a relative one made in
    advance is kept by them instead.
    """
    owner, name = split_model_id(model_id)
    escaped = escape_name(name)
    links = []
    if layout == 'all':
        links.append((posixpath.join('hub', owner, escaped), posixpath.join('..', '..', 'models', owner, escaped)))
    if escaped != name:
        for top in {'hub': ('hub',), 'models': ('models',), 'all': ('models', 'hub')}.get(layout, ()):
            links.append((posixpath.join(top, owner, name), escaped))
    return links


def generations(layout):
    """SDK version ranges that read a model written in ``layout`` as a cache hit."""
    return [GENERATIONS[g] for g in SERVED_BY[layout]]


def layout_for_versions(versions):
    """Pick the layout for the SDK versions found on a host (list of 'x.y.z')."""
    wanted = set()
    for version in versions:
        minor = _minor(version)
        if minor is None:
            continue
        if minor >= 38:
            wanted.add('snapshots')
        elif minor >= 23:
            wanted.add('models')
        else:
            wanted.add('hub')
    if len(wanted) == 1:
        return wanted.pop()
    return 'all'


def _minor(version):
    parts = version.split('.')
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None
    return minor if major == 1 else 1000


def absolute(cache_root, relative):
    return os.path.join(cache_root, *relative.split('/'))
