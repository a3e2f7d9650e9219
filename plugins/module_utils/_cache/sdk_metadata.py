# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hidden files SDKs <= 1.37 need beside a model's files to count it as cached.

``.msc`` is a pickled list of {'Path', 'Revision'}, one per file; ``.mdl`` a pickled
{'id': '<owner>/<escaped name>'}; ``.mv`` the text ``Revision:<rev>,CreatedAt:<unix>``.
What we write is deterministic (sorted, fixed pickle protocol). modelscope_model makes it
readable by everyone (the SDK's own 0600 ``.msc`` locks a runtime user out of a root-made
cache); cache_install gives it the ``file_mode`` and owner of the model's files.
"""


import io
import pickle

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import escape_name, split_model_id

MSC, MDL, MV = '.msc', '.mdl', '.mv'
METADATA_FILES = (MSC, MDL, MV)
PICKLE_PROTOCOL = 4


def msc_bytes(entries):
    """entries: iterable of (path, per-file revision).

    pickle memoizes repeated string *objects*: equal revisions given as one shared
    object or as equal copies (parsed from JSON, say) would pickle differently, so
    equal strings are made one object first.
    """
    same = {}

    def one(text):
        return same.setdefault(text, text)

    records = [{'Path': one(path), 'Revision': one(revision)} for path, revision in sorted(entries)]
    return pickle.dumps(records, protocol=PICKLE_PROTOCOL)


def mdl_bytes(model_id):
    owner, name = split_model_id(model_id)
    return pickle.dumps({'id': '%s/%s' % (owner, escape_name(name))}, protocol=PICKLE_PROTOCOL)


def mv_bytes(revision, created_at):
    return ('Revision:%s,CreatedAt:%d' % (revision, int(created_at or 0))).encode('ascii')


def expected_files(model_id, revision, created_at, entries):
    """{file name: bytes} for the three metadata files of one model."""
    return {
        MSC: msc_bytes(entries),
        MDL: mdl_bytes(model_id),
        MV: mv_bytes(revision, created_at),
    }


class _NoGlobals(pickle.Unpickler):
    """Only plain containers and strings: a cache writable by a runtime user must
    never make a root-run module execute code through a crafted pickle."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError('refusing to load %s.%s' % (module, name))


def load_pickle(data):
    return _NoGlobals(io.BytesIO(data)).load()


def read_msc(data):
    """{path: revision} from .msc bytes; {} when unreadable."""
    try:
        records = load_pickle(data)
    except Exception:  # any malformed pickle means "no usable metadata"
        return {}
    if not isinstance(records, list):
        return {}
    return dict((r.get('Path'), r.get('Revision')) for r in records if isinstance(r, dict) and isinstance(r.get('Path'), str))


def same_content(name, current, wanted):
    """Whether existing metadata already says what we would write.

    The SDK rewrites .mdl on every call and may refresh CreatedAt in .mv, so
    these compare by meaning, not bytes.
    """
    if current is None:
        return False
    if name == MSC:
        return read_msc(current) == read_msc(wanted)
    if name == MDL:
        try:
            return load_pickle(current) == load_pickle(wanted)
        except Exception:
            return False
    return current.split(b',')[0] == wanted.split(b',')[0]
