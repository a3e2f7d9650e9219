import os

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import check_relative_path
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import Record
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import state_path
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, makedirs, unlink_with_temps


@pytest.mark.parametrize('path', ['a', 'a/b.c', '.hidden/x', 'with space.txt', 'sub/.msc'])
def test_relative_paths_accepted(path):
    assert check_relative_path(path) == path


@pytest.mark.parametrize('path', ['', '/a', 'a/../b', '..', 'a/./b', 'a//b', 'a/', 'a\\b', 'a\x00b', '.mdl', None, 'x' * 5000])
def test_relative_paths_rejected(path):
    with pytest.raises(ValueError):
        check_relative_path(path)


def test_atomic_write_replaces_and_sets_mode(tmp_path):
    target = tmp_path / 'f'
    atomic_write(str(target), b'one', mode=0o600)
    atomic_write(str(target), b'two')
    assert target.read_bytes() == b'two'
    assert target.stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ['f']


def test_temps_of_a_killed_write_are_swept_with_the_file_or_the_next_record(tmp_path):
    target, other = tmp_path / 'a.json', tmp_path / 'ab.json'
    killed = [tmp_path / '.a.json.x1y2.tmp', tmp_path / '.a.json.z3.tmp']
    for path in killed + [target, other, tmp_path / '.ab.json.q.tmp']:
        path.write_text('{}')
    unlink_with_temps(str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.ab.json.q.tmp', 'ab.json']
    Record(str(other)).save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ab.json']


def test_makedirs_ignores_umask(tmp_path):
    old = os.umask(0o077)
    try:
        makedirs(str(tmp_path / 'a' / 'b'))
    finally:
        os.umask(old)
    assert (tmp_path / 'a').stat().st_mode & 0o777 == 0o755


def test_record_matches_by_stat(tmp_path):
    f = tmp_path / 'w.bin'
    f.write_bytes(b'1234')
    rec = Record(str(tmp_path / 'r.json'))
    rec.put('w.bin', 4, 'h', 'c1', f.stat())
    rec.save(model='o/n')
    loaded = Record.load(str(tmp_path / 'r.json'))
    assert loaded.matches('w.bin', 4, 'h', f.stat())
    assert not loaded.matches('w.bin', 4, 'other', f.stat())
    os.utime(f, ns=(1, 1))
    assert not loaded.matches('w.bin', 4, 'h', f.stat())
    assert not loaded.matches('missing', 4, 'h', f.stat())


def test_record_tolerates_garbage(tmp_path):
    path = tmp_path / 'r.json'
    path.write_bytes(b'{torn')
    assert Record.load(str(path)).files == {}
    assert Record.load(str(tmp_path / 'absent.json')).files == {}


def test_state_paths_are_flat_and_unique():
    a = state_path('/c', 'records', 'models/o/n', '.json')
    b = state_path('/c', 'records', 'models/o--n/snapshots/master', '.json')
    assert a == '/c/.modelseed/records/models%2Fo%2Fn.json'
    assert os.path.dirname(a) == os.path.dirname(b) and a != b
