# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The parts of the ModelScope HTTP API a download needs."""

import collections
import fnmatch
import re
from urllib.parse import urlencode

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import looks_like_commit
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import check_relative_path
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import parent_dirs
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpError

DEFAULT_ENDPOINT = 'https://www.modelscope.cn'
# The hub cuts every repo/files answer, recursive or not, at this many entries and says nothing (the SDK
# calls it REPO_FILES_TRUNCATION_LIMIT).
LISTING_CAP = 3000
# Far beyond any model repository; a hub that lists more is looping.
MAX_FILES = 1000000
_SHA256 = re.compile(r'^[0-9a-f]{64}\Z')

RemoteFile = collections.namedtuple('RemoteFile', 'path size sha256 revision')
Resolved = collections.namedtuple('Resolved', 'revision commit created_at')


class HubError(ModelseedError):
    pass


class UnknownRevision(HubError):
    """The hub has no branch, tag or commit of that name."""


def resolve_endpoint(endpoint, environ):
    """The explicit option, else MODELSCOPE_ENDPOINT, else MODELSCOPE_DOMAIN, else the public hub."""
    value = endpoint or environ.get('MODELSCOPE_ENDPOINT')
    if not value and environ.get('MODELSCOPE_DOMAIN'):
        value = environ['MODELSCOPE_DOMAIN']
        if '://' not in value:
            value = 'https://' + value
    return (value or DEFAULT_ENDPOINT).rstrip('/')


def auth_headers(token):
    """How SDKs present a token: new ones as a bearer, old ones as a session cookie."""
    if not token:
        return {}
    return {'Authorization': 'Bearer %s' % token, 'Cookie': 'm_session_id=%s' % token}


def select_files(files, include, exclude):
    """Files whose path matches an ``include`` glob (all when none) and no ``exclude`` glob."""
    def matches(path, patterns):
        return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path.rsplit('/', 1)[-1], p) for p in patterns)
    return [f for f in files if (not include or matches(f.path, include)) and not matches(f.path, exclude or [])]


def parse_listing(entries, model_id):
    """RemoteFiles from a ``repo/files`` listing, rejecting what cannot be verified or placed safely.

    Directories are skipped; any other entry (no type, or one such as a submodule) is refused rather than
    dropped, since a file left out of the listing would be left out of the model without a word.
    """
    files = []
    for entry in entries:
        kind = entry.get('Type') if isinstance(entry, dict) else None
        if kind == 'tree':
            continue
        if kind != 'blob':
            raise HubError('hub lists an entry in %s that is neither a file nor a directory (type %r): %s' % (
                model_id, kind, _shorten(entry)))
        path = entry.get('Path')
        try:
            check_relative_path(path)
        except ValueError as exc:
            raise HubError('hub lists an unsafe file name in %s: %s' % (model_id, exc))
        size, sha256 = entry.get('Size'), entry.get('Sha256')
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise HubError('hub lists %s in %s with an invalid size %r' % (path, model_id, size))
        if not isinstance(sha256, str) or not _SHA256.match(sha256.lower()):
            raise HubError('hub lists %s in %s without a sha256, so it cannot be verified' % (path, model_id))
        files.append(RemoteFile(path, size, sha256.lower(), str(entry.get('Revision') or '')))
    paths = set(f.path for f in files)
    clashes = sorted(parent_dirs(paths) & paths)
    if clashes:
        raise HubError('hub lists %s in %s both as a file and as a directory' % (clashes[0], model_id))
    return sorted(files)


def _shorten(value, limit=200):
    """An odd entry as the message shows it: enough to recognise, never the whole of a huge answer."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def _items(value, kind):
    """``value`` when it is a ``kind`` (list or dict), else an empty one: a hub's odd answer is treated as no answer."""
    return value if isinstance(value, kind) else kind()


def _timestamp(value):
    """A commit time the SDK metadata can hold (seconds since the epoch), else 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1 << 40:
        return 0
    return int(value)


class HubApi:
    def __init__(self, client, endpoint):
        self.client = client
        self.endpoint = endpoint

    def _url(self, model_id, suffix='', query=None):
        url = '%s/api/v1/models/%s%s' % (self.endpoint, model_id, suffix)
        return url + ('?' + urlencode(query) if query else '')

    def _data(self, model_id, suffix='', query=None):
        try:
            body = self.client.get_json(self._url(model_id, suffix, query))
        except HttpError as exc:
            if exc.status in (401, 403):
                raise HubError('access to %s denied by %s (HTTP %d): check the token' % (model_id, self.endpoint, exc.status))
            if exc.status == 404:
                raise HubError('model %s not found on %s' % (model_id, self.endpoint))
            raise HubError('%s: %s' % (model_id, exc))
        except ValueError:
            raise HubError('%s answered a request about %s with something that is not JSON' % (self.endpoint, model_id))
        if not isinstance(body, dict) or body.get('Code') not in (200, None) or body.get('Success') is False:
            message = body.get('Message') if isinstance(body, dict) else None
            raise HubError('%s refused a request about %s: %s' % (self.endpoint, model_id, message or body))
        return body.get('Data')

    def resolve(self, model_id, revision):
        """Resolve a branch, tag or commit id to the commit every file will be fetched at."""
        revmap = _items(_items(self._data(model_id, '/revisions'), dict).get('RevisionMap'), dict)
        refs = [r for r in _items(revmap.get('Branches'), list) + _items(revmap.get('Tags'), list)
                if isinstance(r, dict) and isinstance(r.get('CommitId'), str) and looks_like_commit(r['CommitId'])]
        for ref in refs:
            if ref.get('Revision') == revision:
                return Resolved(revision, ref['CommitId'], _timestamp(ref.get('CreatedAt')))
        if looks_like_commit(revision):
            for ref in refs:
                if ref['CommitId'].startswith(revision):
                    return Resolved(revision, ref['CommitId'], _timestamp(ref.get('CreatedAt')))
            # A commit no ref points at: the listing tells whether the hub knows it.
            try:
                self._list(model_id, revision, None, True)
            except HubError:
                pass
            else:
                return Resolved(revision, revision, 0)
        names = sorted(str(r.get('Revision')) for r in refs)
        raise UnknownRevision('unknown revision %r of %s (known: %s)' % (revision, model_id, ', '.join(names) or 'none'))

    def _list(self, model_id, commit, root, recursive):
        query = {'Revision': commit, 'Recursive': 'True' if recursive else 'False'}
        if root:
            query['Root'] = root
        data = self._data(model_id, '/repo/files', query)
        entries = data.get('Files') if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise HubError('hub returned no file listing for %s at %s' % (model_id, commit))
        return entries

    def list_files(self, model_id, commit):
        """Every file of the model at ``commit``, or a HubError: never a listing the hub cut short."""
        entries = self._list(model_id, commit, None, True)
        if len(entries) >= LISTING_CAP:
            entries = self._walk(model_id, commit, entries)
        files = parse_listing(entries, model_id)
        if len(set(f.path for f in files)) != len(files):
            raise HubError('hub lists the same file twice in %s' % (model_id,))
        return files

    def _walk(self, model_id, commit, top_listing):
        """Recover a listing the hub cut at LISTING_CAP, as the SDK does: with listings scoped by ``Root``.

        A subtree listed whole below the cap is complete. One at the cap is listed again one level deep,
        and each of its directories is then listed whole, and so on down. A one-level listing at the cap
        means a directory with more direct entries than the hub ever returns: that cannot be recovered, and
        fails. Only directories strictly below the one listed are entered, each once, so a hub whose
        listing loops cannot send the walk round for ever.
        """
        collected = _Collected(model_id)
        known = {'': top_listing}
        frontier, seen = [''], set()
        while frontier:
            below = []
            for root in frontier:
                subtree = known.pop(root) if root in known else self._list(model_id, commit, root, True)
                collected.add(subtree)
                if len(subtree) < LISTING_CAP:
                    continue
                shallow = self._list(model_id, commit, root, False)
                children = _child_dirs(shallow, root, seen)
                if len(shallow) >= LISTING_CAP or not children:
                    raise HubError(
                        'directory %s of %s holds %d or more entries, more than the hub lists in one answer, so '
                        'its file list cannot be complete; the model cannot be downloaded whole from this hub' % (
                            root or '/', model_id, LISTING_CAP))
                collected.add(shallow)
                seen.update(children)
                below.extend(children)
            frontier = below
        return collected.entries()

    def file_url(self, model_id, commit, path):
        return self._url(model_id, '/repo', [('Revision', commit), ('FilePath', path)])


def _child_dirs(entries, root, seen):
    """Directories in a one-level listing of ``root`` that lie strictly below it and were not entered yet."""
    prefix = root + '/' if root else ''
    found = collections.OrderedDict()
    for entry in entries:
        path = entry.get('Path') if isinstance(entry, dict) and entry.get('Type') == 'tree' else None
        if isinstance(path, str) and len(path) > len(prefix) and path.startswith(prefix) and path not in seen:
            found[path] = True
    return list(found)


def _what_is_fetched(entry):
    """The fields of an entry that decide which bytes land on disk."""
    return tuple(entry.get(key) for key in ('Type', 'Size', 'Sha256'))


class _Collected:
    """Entries of several listings, each path once: a subtree cut at the cap and its re-listing overlap.

    The same path listed as other bytes by two answers is a hub contradicting itself, and fails.
    """

    def __init__(self, model_id):
        self.model_id = model_id
        self._by_path = {}
        self._odd = []

    def add(self, entries):
        for entry in entries:
            path = entry.get('Path') if isinstance(entry, dict) else None
            if not isinstance(path, str):
                self._odd.append(entry)  # parse_listing says what is wrong with it
            elif path not in self._by_path:
                self._by_path[path] = entry
            elif _what_is_fetched(self._by_path[path]) != _what_is_fetched(entry):
                raise HubError('hub lists %s in %s twice, differently' % (path, self.model_id))
        if len(self._by_path) + len(self._odd) > MAX_FILES:
            raise HubError('hub lists more than %d files in %s' % (MAX_FILES, self.model_id))

    def entries(self):
        return list(self._by_path.values()) + self._odd
