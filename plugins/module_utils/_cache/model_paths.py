# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The paths of a model's files: plain relative POSIX paths that stay inside the model directory."""

import os

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.sdk_metadata import METADATA_FILES

MAX_PATH = 4096
# A model's OpenSSF model-signing signature is kept beside its directory, not in it: <model directory>.sig
SIGNATURE_SUFFIX = '.sig'


def check_relative_path(path):
    """Raise ValueError unless ``path`` is a plain relative POSIX path inside its root.

    Rejects absolute paths, '..', empty or '.' components, backslashes, NUL and
    control characters, and names the SDK metadata files use at the top level.
    """
    if not isinstance(path, str) or not path:
        raise ValueError('empty file name')
    if len(path.encode('utf-8', 'surrogateescape')) > MAX_PATH:
        raise ValueError('file name longer than %d bytes' % MAX_PATH)
    if path.startswith('/') or '\\' in path or any(ord(c) < 32 for c in path):
        raise ValueError('%r is not a relative POSIX path' % (path,))
    parts = path.split('/')
    if any(p in ('', '.', '..') for p in parts):
        raise ValueError('%r has an empty, "." or ".." component' % (path,))
    if path in METADATA_FILES:
        raise ValueError('%r clashes with SDK metadata' % (path,))
    return path


def join(root, relative):
    return os.path.join(root, *check_relative_path(relative).split('/'))


def signature_beside(model_dir):
    """Where an installed model's model-signing signature is kept: beside its directory."""
    return model_dir.rstrip(os.sep) + SIGNATURE_SUFFIX
