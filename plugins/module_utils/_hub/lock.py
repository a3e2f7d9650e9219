# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""modelseed.lock: the commit and the files each model of a staging run is pinned to, as diff-friendly text.

::

    # comment lines and blank lines are ignored
    modelseed-lock 1

    model Qwen/Qwen2.5-0.5B-Instruct
    revision master
    commit 5a1d6b0c3a5e4f4b9d4a8e0e1f2c3b4a5d6e7f80
    created_at 1718000000
    include *.json                  one line per pattern, none when all files are selected
    exclude *.bin
    file <sha256> <size> <file revision or -> <path>

One block per model and revision, sorted, files sorted by path, fields separated by one space (a path may hold
spaces: it is the rest of the line). ``created_at`` is the commit time the SDK metadata carries; the file revision
is the commit that last changed the file, which the SDK's ``.msc`` lists. Together they fix every byte of the model's
tar in a bundle.
"""

import re

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import InvalidName, check_revision, split_model_id
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import check_relative_path
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError

HEADER = 'modelseed-lock 1'
NO_REVISION = '-'
_SHA256 = re.compile(r'^[0-9a-f]{64}\Z')
_TOKEN = re.compile(r'^\S+\Z')
# Differences listed one per line in a message; the rest are counted.
DIFFERENCES_SHOWN = 20


class LockError(ModelseedError):
    pass


class LockDrift(ModelseedError):
    """The hub no longer serves what the lock names."""


def _token(value, what):
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise LockError('%s %r must be one word without spaces' % (what, value))
    return value


def _pattern(value, what):
    if not isinstance(value, str) or not value or any(ord(c) < 32 for c in value):
        raise LockError('%s pattern %r must be a non-empty line' % (what, value))
    return value


def render(entries):
    """The lock text of ``entries``: [{name, revision, commit, created_at, include, exclude, files}]."""
    lines = ['# Written by modelseed.fleet. Update it with modelseed_lock_update rather than by hand.', HEADER]
    for entry in sorted(entries, key=lambda e: (e['name'], e['revision'])):
        lines.extend(['', 'model %s' % entry['name'], 'revision %s' % entry['revision'],
                      'commit %s' % _token(entry['commit'], 'commit'), 'created_at %d' % int(entry['created_at'])])
        lines.extend('include %s' % _pattern(p, 'include') for p in entry.get('include') or [])
        lines.extend('exclude %s' % _pattern(p, 'exclude') for p in entry.get('exclude') or [])
        for f in sorted(entry['files'], key=lambda f: f['path']):
            revision = _token(f.get('revision') or NO_REVISION, 'file revision')
            lines.append('file %s %d %s %s' % (f['sha256'], int(f['size']), revision, f['path']))
    return '\n'.join(lines) + '\n'


class _Parser:
    def __init__(self):
        self.entries = []
        self.current = None
        self.number = 0

    def fail(self, why):
        raise LockError('line %d: %s' % (self.number, why))

    def need_model(self, key):
        if self.current is None:
            self.fail('%s before the first "model" line' % key)
        return self.current

    def line(self, key, value):
        if key == 'model':
            self.start(value)
        elif key in ('revision', 'commit'):
            entry = self.need_model(key)
            if entry[key] is not None:
                self.fail('a second %s for %s' % (key, entry['name']))
            entry[key] = value
        elif key == 'created_at':
            if not value.isdigit():
                self.fail('created_at must be seconds since the epoch')
            self.need_model(key)['created_at'] = int(value)
        elif key in ('include', 'exclude'):
            self.need_model(key)[key].append(value)
        elif key == 'file':
            self.need_model(key)['files'].append(self.file(value))
        else:
            self.fail('unknown line %r' % key)

    def start(self, name):
        try:
            split_model_id(name)
        except InvalidName as exc:
            self.fail(str(exc))
        self.current = dict(name=name, revision=None, commit=None, created_at=None, include=[], exclude=[], files=[])
        self.entries.append(self.current)

    def file(self, value):
        parts = value.split(' ', 3)
        if len(parts) != 4 or not _SHA256.match(parts[0]) or not parts[1].isdigit():
            self.fail('expected "file <sha256> <size> <revision> <path>"')
        try:
            check_relative_path(parts[3])
        except ValueError as exc:
            self.fail(str(exc))
        return dict(sha256=parts[0], size=int(parts[1]), revision='' if parts[2] == NO_REVISION else parts[2], path=parts[3])


def key(name, revision):
    """How a lock entry is named: ``<model id>@<revision>``, as messages name a model."""
    return '%s@%s' % (name, revision)


def parse(text):
    """{model id@revision: entry} of a lock's text; raises LockError naming the line that is wrong."""
    parser = _Parser()
    seen_header = False
    for parser.number, line in enumerate(text.split('\n'), 1):
        if not line.strip() or line.startswith('#'):
            continue
        if not seen_header:
            if line != HEADER:
                parser.fail('expected "%s" (a lock this collection writes)' % HEADER)
            seen_header = True
            continue
        word, _sep, value = line.partition(' ')
        if not value:
            parser.fail('%r has no value' % word)
        parser.line(word, value)
    if not seen_header:
        raise LockError('empty: no "%s" line' % HEADER)
    entries = {}
    for entry in parser.entries:
        _check_entry(entry)
        label = key(entry['name'], entry['revision'])
        if label in entries:
            raise LockError('%s is locked twice' % label)
        entries[label] = entry
    return entries


def _check_entry(entry):
    missing = [key for key in ('revision', 'commit', 'created_at') if entry[key] is None]
    if missing or not entry['files']:
        raise LockError('%s has no %s' % (entry['name'], ', '.join(missing) or 'file'))
    try:
        check_revision(entry['revision'])
    except InvalidName as exc:
        raise LockError('%s: %s' % (entry['name'], exc))
    paths = [f['path'] for f in entry['files']]
    if len(set(paths)) != len(paths):
        raise LockError('%s lists a file twice' % entry['name'])


def request_change(entry, wanted):
    """Why the lock's ``entry`` does not answer the request ``wanted`` ({include, exclude}), or None."""
    for field in ('include', 'exclude'):
        if entry[field] != wanted[field]:
            return '%s [%s] in the lock, [%s] asked for' % (field, ', '.join(entry[field]), ', '.join(wanted[field]))
    return None


def differences(locked, listed):
    """Lines saying how the files ``listed`` by the hub differ from the ``locked`` ones (both {path, size, sha256,
    revision} dicts); empty when they agree."""
    locked = dict((f['path'], f) for f in locked)
    listed = dict((f['path'], f) for f in listed)
    lines = []
    for path in sorted(set(locked) | set(listed)):
        was, now = locked.get(path), listed.get(path)
        if now is None:
            lines.append('%s: locked, no longer on the hub' % path)
        elif was is None:
            lines.append('%s: on the hub, not in the lock' % path)
        elif (was['size'], was['sha256']) != (now['size'], now['sha256']):
            lines.append('%s: locked %d bytes sha256 %s, the hub has %d bytes sha256 %s' % (
                path, was['size'], was['sha256'][:12], now['size'], now['sha256'][:12]))
        elif (was.get('revision') or '') != (now.get('revision') or ''):
            lines.append('%s: locked at file revision %s, the hub says %s' % (
                path, was.get('revision') or NO_REVISION, now.get('revision') or NO_REVISION))
    return lines


def summary(lines):
    """``lines`` for a one-line message: the first DIFFERENCES_SHOWN of them, then how many more."""
    shown = '; '.join(lines[:DIFFERENCES_SHOWN])
    more = len(lines) - DIFFERENCES_SHOWN
    return shown + ('; and %d more' % more if more > 0 else '')


def pins(locked, models, update):
    """Split the requested ``models`` ({name, revision, include, exclude}) into (pins, fresh).

    pins: {model id@revision: {commit, created_at, files}} that the download must honour; fresh: {model id@revision:
    why} for the models the hub resolves again: not in the lock (a new model, or another revision), asked for with
    other file patterns than the lock says, or named in ``update`` (model ids, or ['all'] for every model). A name in
    ``update`` that is not requested is refused: it is most likely a typo.
    """
    names = [m['name'] for m in models]
    unknown = sorted(set(update) - set(names) - set(['all']))
    if unknown:
        raise LockError('the lock update names %s, which the model list does not request (it has %s)' % (
            ', '.join(unknown), ', '.join(names)))
    pinned, fresh = {}, {}
    for model in models:
        label = key(model['name'], model['revision'])
        entry = locked.get(label)
        change = request_change(entry, model) if entry else None
        if 'all' in update or model['name'] in update:
            fresh[label] = 'update asked for'
        elif entry is None:
            fresh[label] = 'not in the lock yet'
        elif change:
            fresh[label] = change
        else:
            pinned[label] = dict(commit=entry['commit'], created_at=entry['created_at'], files=entry['files'])
    return pinned, fresh


def changes(old, new):
    """Lines saying how the lock entries ``new`` ({model id@revision: entry}) differ from ``old``, one per model."""
    lines = []
    for name in sorted(set(old) | set(new)):
        was, now = old.get(name), new.get(name)
        if was is None:
            lines.append('%s added at commit %s' % (name, now['commit'][:12]))
        elif now is None:
            lines.append('%s removed' % name)
        elif was['commit'] != now['commit']:
            lines.append('%s moved from commit %s to %s' % (name, was['commit'][:12], now['commit'][:12]))
        elif was != now:
            lines.append('%s changed at commit %s' % (name, now['commit'][:12]))
    return lines
