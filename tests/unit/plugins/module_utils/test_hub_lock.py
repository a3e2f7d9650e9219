import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._hub import lock

SHA_A, SHA_B = 'a' * 64, 'b' * 64
ENTRY = dict(name='o/m', revision='v1.0', commit='c' * 40, created_at=1700000000, include=['*.json', 'with space *'], exclude=[],
             files=[dict(path='w/b.bin', size=5, sha256=SHA_B, revision=''), dict(path='a b.json', size=2, sha256=SHA_A, revision='r1')])
OTHER = dict(ENTRY, name='a/first', include=[], files=[dict(path='x', size=0, sha256=SHA_A, revision='r2')])


def test_render_is_sorted_and_reads_back():
    text = lock.render([ENTRY, OTHER])
    assert text.splitlines()[1:] == [
        'modelseed-lock 1',
        '',
        'model a/first', 'revision v1.0', 'commit ' + 'c' * 40, 'created_at 1700000000', 'file %s 0 r2 x' % SHA_A,
        '',
        'model o/m', 'revision v1.0', 'commit ' + 'c' * 40, 'created_at 1700000000', 'include *.json', 'include with space *',
        'file %s 2 r1 a b.json' % SHA_A, 'file %s 5 - w/b.bin' % SHA_B,
    ]
    parsed = lock.parse(text)
    assert parsed['o/m@v1.0']['files'] == sorted(ENTRY['files'], key=lambda f: f['path'])
    assert lock.render(parsed.values()) == text


@pytest.mark.parametrize('text, error', [
    ('', 'empty'),
    ('model o/m\n', 'line 1: expected "modelseed-lock 1"'),
    ('modelseed-lock 1\nrevision master\n', 'line 2: revision before the first "model" line'),
    ('modelseed-lock 1\n' + 'model o/m\nrevision a\ncommit c\ncreated_at 1\nfile %s 1 - p\n' % SHA_A * 2, 'o/m@a is locked twice'),
    ('modelseed-lock 1\nmodel ../x\n', "line 2: invalid model id '../x'"),
    ('modelseed-lock 1\nmodel o/m\nfile %s 1 - ../up\n' % SHA_A, "line 3: '../up' has an empty"),
    ('modelseed-lock 1\nmodel o/m\nfile %s x - p\n' % SHA_A, 'line 3: expected "file <sha256> <size> <revision> <path>"'),
    ('modelseed-lock 1\nmodel o/m\nfiles 1\n', "line 3: unknown line 'files'"),
    ('modelseed-lock 1\nmodel o/m\ncreated_at -1\n', 'line 3: created_at must be seconds'),
    ('modelseed-lock 1\nmodel o/m\nrevision a\ncreated_at 1\nfile %s 1 - p\n' % SHA_A, 'o/m has no commit'),
    ('modelseed-lock 1\nmodel o/m\nrevision a\ncommit c\ncreated_at 1\n', 'o/m has no file'),
])
def test_parse_names_what_is_wrong(text, error):
    with pytest.raises(lock.LockError) as exc:
        lock.parse(text)
    assert str(exc.value).startswith(error), str(exc.value)


def test_differences_list_each_file():
    locked = [dict(path='same', size=1, sha256=SHA_A, revision='r'), dict(path='changed', size=1, sha256=SHA_A, revision='r'),
              dict(path='gone', size=1, sha256=SHA_A, revision='r'), dict(path='moved', size=1, sha256=SHA_A, revision='r')]
    listed = [dict(path='same', size=1, sha256=SHA_A, revision='r'), dict(path='changed', size=2, sha256=SHA_B, revision='r'),
              dict(path='new', size=3, sha256=SHA_B, revision='r'), dict(path='moved', size=1, sha256=SHA_A, revision='r9')]
    assert lock.differences(locked, listed) == [
        'changed: locked 1 bytes sha256 aaaaaaaaaaaa, the hub has 2 bytes sha256 bbbbbbbbbbbb',
        'gone: locked, no longer on the hub',
        'moved: locked at file revision r, the hub says r9',
        'new: on the hub, not in the lock',
    ]
    assert lock.differences(locked, locked) == []
    assert lock.summary(['x'] * 25) == '; '.join(['x'] * 20) + '; and 5 more'


def test_pins_honour_the_lock_unless_asked_otherwise():
    locked = lock.parse(lock.render([ENTRY, OTHER]))
    asked = [dict(name='o/m', revision='v1.0', include=['*.json', 'with space *'], exclude=[]),
             dict(name='a/first', revision='v1.0', include=['*'], exclude=[]),
             dict(name='o/m', revision='v2.0', include=[], exclude=[]),
             dict(name='n/new', revision='master', include=[], exclude=[])]
    pinned, fresh = lock.pins(locked, asked, [])
    assert pinned == {'o/m@v1.0': dict(commit='c' * 40, created_at=1700000000, files=locked['o/m@v1.0']['files'])}
    assert fresh == {'a/first@v1.0': 'include [] in the lock, [*] asked for', 'o/m@v2.0': 'not in the lock yet',
                     'n/new@master': 'not in the lock yet'}
    assert lock.pins(locked, asked, ['o/m'])[0] == {}
    assert lock.pins(locked, asked, ['all']) == ({}, dict.fromkeys(['o/m@v1.0', 'a/first@v1.0', 'o/m@v2.0', 'n/new@master'], 'update asked for'))
    with pytest.raises(lock.LockError, match='the lock update names o/typo, which the model list does not request'):
        lock.pins(locked, asked, ['o/typo'])


def test_changes_name_each_model():
    old = lock.parse(lock.render([ENTRY, OTHER]))
    added = dict(name='n/new', revision='master', commit='e' * 40, created_at=0, files=OTHER['files'])
    new = lock.parse(lock.render([dict(ENTRY, commit='d' * 40), added]))
    assert lock.changes(old, new) == ['a/first@v1.0 removed', 'n/new@master added at commit eeeeeeeeeeee',
                                      'o/m@v1.0 moved from commit cccccccccccc to dddddddddddd']
