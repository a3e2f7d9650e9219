import hashlib
import io
import os
import subprocess
import tarfile
import threading

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import tar_writer as tw
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import writer as bw
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import Record
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import state_path
from ansible_collections.modelseed.fleet.plugins.module_utils._fs import tree
from support.recorded_cache import MTIME, entry_for, seed


def tarinfo(name, kind, size, mtime=MTIME):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if kind == 'dir' else tarfile.REGTYPE
    info.mode = 0o755 if kind == 'dir' else 0o644
    info.size = size if kind == 'file' else 0
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ''
    return info


@pytest.mark.parametrize('name, kind, size, mtime', [
    ('a', 'file', 5, MTIME),
    ('dir', 'dir', 0, MTIME),
    ('x' * 100, 'file', 1, 1),
    ('x' * 101, 'file', 1, 1),
    ('d' * 99, 'dir', 0, 5),       # 100 bytes with its slash
    ('d' * 100, 'dir', 0, 5),      # 101: pax path
    ('deep/' * 40 + 'w.bin', 'file', 3, 0),
    ('\u00e9' * 60 + '.bin', 'file', 3, 7),
    ('\u65e5\u672c/\u8a9e.txt', 'file', 0, 0),
    ('name with space.txt', 'file', 9, MTIME),
    ('huge.bin', 'file', 8 ** 11, 3),        # 8 GiB: size goes to the pax header
    ('almost.bin', 'file', 8 ** 11 - 1, 3),
    ('future', 'file', 1, 8 ** 11),
])
def test_header_is_what_tarfile_writes(name, kind, size, mtime):
    expected = tarinfo(name, kind, size, mtime).tobuf(tarfile.PAX_FORMAT, 'utf-8', 'surrogateescape')
    assert tw.header(name, kind, size, mtime) == expected
    assert tw.member_size(name, kind, size, mtime) == len(expected) + (size if kind == 'file' else 0) + (-size % 512 if kind == 'file' else 0)


def test_non_utf8_names_are_refused():
    with pytest.raises(tw.BundleWriteError):
        tw.header('bad\udcff', 'file', 0, 0)


def write_tar(path, members, buffer_size=tw.BUFFER_SIZE, buffers=tw.BUFFERS):
    """members: [(name, 'dir'|'file'|'bytes', source path or bytes)] -> (size, sha256)."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with tw.TarWriter(fd, buffer_size, buffers) as tar:
            for name, kind, payload in members:
                if kind == 'dir':
                    tar.add_dir(name, MTIME)
                elif kind == 'bytes':
                    tar.add_bytes(name, payload, MTIME)
                else:
                    tar.add_file(name, str(payload), os.path.getsize(str(payload)), MTIME)
            return tar.close()
    finally:
        os.close(fd)


def tarfile_bytes(members):
    """The same members written by tarfile itself."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT, encoding='utf-8') as archive:
        for name, kind, payload in members:
            if kind == 'dir':
                archive.addfile(tarinfo(name, 'dir', 0))
            else:
                data = payload if kind == 'bytes' else open(str(payload), 'rb').read()
                archive.addfile(tarinfo(name, 'file', len(data)), io.BytesIO(data))
    return out.getvalue()


def test_empty_archive_is_one_record_of_zeros(tmp_path):
    size, digest = write_tar(tmp_path / 't.tar', [])
    data = (tmp_path / 't.tar').read_bytes()
    assert size == len(data) == 10240 and data == b'\0' * 10240
    assert digest == hashlib.sha256(data).hexdigest()
    assert data == tarfile_bytes([])
    with tarfile.open(str(tmp_path / 't.tar')) as archive:
        assert archive.getmembers() == []


@pytest.mark.parametrize('buffer_size, buffers', [(tw.BUFFER_SIZE, tw.BUFFERS), (1024, 2), (1536, 3), (4096, 2)])
def test_padding_and_buffer_boundaries_match_tarfile(tmp_path, buffer_size, buffers):
    sizes = [0, 1, 511, 512, 513, 1023, 1024, 1025, 4096 * 3 + 17, 70000]
    members = [('d', 'dir', None), ('d/sub', 'dir', None)]
    for size in sizes:
        path = tmp_path / ('f%d' % size)
        path.write_bytes(os.urandom(size))
        members.append(('d/sub/f%d.bin' % size, 'file', path))
    members.append(('.msc', 'bytes', b'metadata'))
    members.append(('empty-bytes', 'bytes', b''))
    size, digest = write_tar(tmp_path / 't.tar', members, buffer_size, buffers)
    data = (tmp_path / 't.tar').read_bytes()
    assert data == tarfile_bytes(members)
    assert size == len(data) and size % 10240 == 0 and digest == hashlib.sha256(data).hexdigest()
    predicted = tw.archive_size(tw.member_size(n, 'dir' if k == 'dir' else 'file', 0 if k == 'dir' else
                                               (len(p) if k == 'bytes' else os.path.getsize(str(p))), MTIME)
                                for n, k, p in members)
    assert predicted == size


def test_long_and_unicode_names_read_back_with_tarfile_and_gnu_tar(tmp_path):
    long_name = 'a' * 80 + '/' + 'b' * 80 + '/weights-' + 'c' * 120 + '.safetensors'
    names = [long_name, 'mod\u00e8les/\u6a21\u578b.bin', 'caf\u00e9.txt', 'name with space.txt', 'x' * 100]
    members = []
    for index, name in enumerate(names):
        path = tmp_path / ('src%d' % index)
        path.write_bytes(name.encode('utf-8') * 3)
        members.append((name, 'file', path))
    write_tar(tmp_path / 't.tar', members)
    with tarfile.open(str(tmp_path / 't.tar'), encoding='utf-8') as archive:
        assert archive.getnames() == names
        for name in names:
            assert archive.extractfile(name).read() == name.encode('utf-8') * 3
    listing = subprocess.run(['tar', '-tf', str(tmp_path / 't.tar')], capture_output=True, check=True,
                             env=dict(os.environ, LC_ALL='C.UTF-8'))
    assert listing.stdout.decode('utf-8').splitlines() == names


def test_files_are_checked_while_they_are_read(tmp_path):
    good = tmp_path / 'good.bin'
    good.write_bytes(b'payload' * 1000)
    st = good.stat()
    fd = os.open(str(tmp_path / 't.tar'), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with tw.TarWriter(fd, 1024, 2) as tar:
            with pytest.raises(tw.BundleWriteError, match='bytes on disk'):
                tar.add_file('good.bin', str(good), st.st_size + 1, MTIME)
            with pytest.raises(tw.BundleWriteError, match='changed since it was verified'):
                tar.add_file('good.bin', str(good), st.st_size, MTIME, expect_stat=(st.st_size, st.st_mtime_ns + 1))
            os.symlink('good.bin', str(tmp_path / 'link'))
            with pytest.raises(tw.BundleWriteError, match='cannot open'):
                tar.add_file('link', str(tmp_path / 'link'), st.st_size, MTIME)
            with pytest.raises(tw.BundleWriteError, match='not a regular file'):
                tar.add_file('dir', str(tmp_path), 0, MTIME)
            tar.add_file('good.bin', str(good), st.st_size, MTIME, expect_stat=(st.st_size, st.st_mtime_ns),
                         verify_sha256='0' * 64)
            tar.close()
            assert tar.mismatches == ['good.bin']
    finally:
        os.close(fd)


def test_leaving_early_stops_the_hashing_threads(tmp_path):
    before = threading.active_count()
    source = tmp_path / 's'
    source.write_bytes(os.urandom(10000))
    fd = os.open(str(tmp_path / 't.tar'), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(RuntimeError):
            with tw.TarWriter(fd, 1024, 2) as tar:
                tar.add_file('s', str(source), 10000, MTIME, verify_sha256='0' * 64)
                raise RuntimeError('interrupted')
    finally:
        os.close(fd)
    assert threading.active_count() == before


# -- whole models -------------------------------------------------------------

FILES = {
    'config.json': b'{"model_type": "qwen2"}',
    'weights/model-00001.bin': os.urandom(3 << 20),
    'weights/sub/empty.bin': b'',
    '.hidden/settings.json': b'{}',
    'x' * 120 + '/long.bin': b'long',
    '\u6a21\u578b.txt': b'unicode',
}


def test_model_tar_is_the_same_from_any_layout(tmp_path):
    seed(tmp_path / 'a', 'models/o/m', FILES)
    seed(tmp_path / 'b', 'models/o--m/snapshots/master', FILES, layout='snapshots')
    results = []
    for cache in ('a', 'b'):
        model, source = entry_for(tmp_path / cache)
        out = tmp_path / (cache + '.tar')
        fd = os.open(str(out), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            results.append(tw.write_model_tar(model, source.dir, fd))
        finally:
            os.close(fd)
        assert results[-1][0] == tw.model_tar_size(model) == out.stat().st_size
        assert source.layout == ('models' if cache == 'a' else 'snapshots')
    assert results[0] == results[1]
    assert (tmp_path / 'a.tar').read_bytes() == (tmp_path / 'b.tar').read_bytes()
    with tarfile.open(str(tmp_path / 'a.tar'), encoding='utf-8') as archive:
        names = archive.getnames()
        assert names == sorted(names)
        assert [n for n in names if archive.getmember(n).isdir()] == ['.hidden', 'weights', 'weights/sub', 'x' * 120]
        for path, data in FILES.items():
            assert archive.extractfile(path).read() == data
        for name, data in bundle_format.metadata_entries(model):
            assert archive.extractfile(name).read() == data


def test_model_of_empty_files_only(tmp_path):
    seed(tmp_path, 'models/o/m', {'a.txt': b'', 'b/c.txt': b''})
    model, source = entry_for(tmp_path)
    assert model['bytes'] == 0
    plan = bw.BundlePlan(str(tmp_path / 'dest'), [(model, source)])
    os.makedirs(str(tmp_path / 'dest'))
    plan.apply()
    with tarfile.open(str(tmp_path / 'dest' / model['tar'])) as archive:
        assert [(m.name, m.size) for m in archive.getmembers() if m.isfile() and not m.name.startswith('.')] == [
            ('a.txt', 0), ('b/c.txt', 0)]


def test_record_without_files_or_unsafe_paths_is_refused(tmp_path):
    seed(tmp_path, 'models/o/m', {})
    with pytest.raises(tw.BundleWriteError, match='not found'):
        entry_for(tmp_path)   # an empty record is no record, and there is no directory either
    os.makedirs(str(tmp_path / 'models/o/m'))
    with pytest.raises(tw.BundleWriteError, match='no verification record'):
        entry_for(tmp_path)
    seed(tmp_path, 'models/o/m', {'ok.bin': b'1'})
    record = Record.load(state_path(str(tmp_path), 'records', 'models/o/m', '.json'))
    record.files['../escape'] = dict(record.files['ok.bin'])
    record.save()
    with pytest.raises(tw.BundleWriteError, match='cannot be bundled'):
        entry_for(tmp_path)


def test_find_source_explains_a_revision_mismatch(tmp_path):
    seed(tmp_path, 'models/o/m', {'a': b'1'}, revision='v1')
    with pytest.raises(tw.BundleWriteError, match="holds revision 'v1'.*modelscope_model"):
        entry_for(tmp_path, revision='master')
    assert entry_for(tmp_path, revision='v1')[1].rel == 'models/o/m'


def test_plan_reuses_unchanged_tars_and_rewrites_changed_ones(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    seed(tmp_path / 'c', 'models/o/m', {'a.bin': b'a' * 1000})
    seed(tmp_path / 'c', 'models/o/n', {'b.bin': b'b' * 1000}, model_id='o/n')
    entries = [entry_for(tmp_path / 'c', 'o/m'), entry_for(tmp_path / 'c', 'o/n')]
    first = bw.BundlePlan(str(dest), entries)
    assert first.changed and first.reasons == {'new': [('o/m', 'master'), ('o/n', 'master')]}
    first.apply()
    doc = bundle_format.parse_manifest((dest / 'manifest.json').read_bytes())
    assert [m['tar_sha256'] for m in doc['models']] == [
        hashlib.sha256((dest / m['tar']).read_bytes()).hexdigest() for m in doc['models']]
    sums = bundle_format.parse_sums((dest / 'SHA256SUMS').read_bytes())
    assert sums['manifest.json'] == hashlib.sha256((dest / 'manifest.json').read_bytes()).hexdigest()

    again = bw.BundlePlan(str(dest), [entry_for(tmp_path / 'c', 'o/m'), entry_for(tmp_path / 'c', 'o/n')])
    assert not again.changed and again.write == [] and again.reason_list() == []

    seed(tmp_path / 'c', 'models/o/n', {'b.bin': b'B' * 1000}, model_id='o/n', commit='d' * 40)
    changed = bw.BundlePlan(str(dest), [entry_for(tmp_path / 'c', 'o/m'), entry_for(tmp_path / 'c', 'o/n')])
    assert changed.reasons == {'changed commit': [('o/n', 'master')]}
    assert [m['id'] for m in changed.write] == ['o/n']
    assert changed.reason_list() == ['1 model(s) changed commit']

    dropped = bw.BundlePlan(str(dest), [entry_for(tmp_path / 'c', 'o/m')])
    assert dropped.reasons == {'removed': [('o/n', 'master')]} and dropped.prune == ['o--n--master.tar']
    kept = bw.BundlePlan(str(dest), [entry_for(tmp_path / 'c', 'o/m')], prune=False)
    assert kept.prune == [] and kept.changed


def test_bundle_bytes_do_not_depend_on_cache_path_umask_or_file_times(tmp_path):
    """Two staging caches (other roots, another umask, files written at other times) give the same bundle bytes."""
    bundles = []
    for root, umask in ((tmp_path / 'a', 0o022), (tmp_path / 'elsewhere' / 'deeper' / 'b', 0o077)):
        old = os.umask(umask)
        try:
            seed(root, 'models/o/m', FILES)
            seed(root, 'models/o/n', {'b.bin': b'b' * 1000}, model_id='o/n')
            dest = root / 'bundle'
            dest.mkdir()
            bw.BundlePlan(str(dest), [entry_for(root, 'o/m'), entry_for(root, 'o/n')]).apply()
        finally:
            os.umask(old)
        bundles.append({p.name: (p.read_bytes(), p.stat().st_mode) for p in sorted(dest.iterdir())})
    assert (tmp_path / 'a' / 'models' / 'o' / 'm' / 'config.json').stat().st_mtime_ns != (
        tmp_path / 'elsewhere' / 'deeper' / 'b' / 'models' / 'o' / 'm' / 'config.json').stat().st_mtime_ns
    assert sorted(bundles[0]) == ['SHA256SUMS', 'manifest.json', 'o--m--master.tar', 'o--n--master.tar']
    assert bundles[0] == bundles[1]


def test_update_without_kernel_exchange_moves_the_old_bundle_aside(tmp_path, monkeypatch):
    """Where renameat2 cannot exchange, dest is renamed aside and the new directory takes its name: the bundle is
    the new one afterwards, with the unchanged tar hard-linked, and nothing is left beside it."""
    dest = tmp_path / 'dest'
    dest.mkdir()
    seed(tmp_path / 'c', 'models/o/m', {'a.bin': b'a' * 1000})
    seed(tmp_path / 'c', 'models/o/n', {'b.bin': b'b' * 1000}, model_id='o/n')
    bw.BundlePlan(str(dest), [entry_for(tmp_path / 'c', 'o/m'), entry_for(tmp_path / 'c', 'o/n')]).apply()
    kept = (dest / 'o--m--master.tar').stat().st_ino
    seed(tmp_path / 'c', 'models/o/n', {'b.bin': b'B' * 1000}, model_id='o/n', commit='d' * 40)
    monkeypatch.setattr(tree, 'exchange', lambda first, second: False)
    bw.BundlePlan(str(dest), [entry_for(tmp_path / 'c', 'o/m'), entry_for(tmp_path / 'c', 'o/n')]).apply()
    doc = bundle_format.parse_manifest((dest / 'manifest.json').read_bytes())
    assert doc['models'][1]['commit'] == 'd' * 40
    assert [m['tar_sha256'] for m in doc['models']] == [
        hashlib.sha256((dest / m['tar']).read_bytes()).hexdigest() for m in doc['models']]
    assert (dest / 'o--m--master.tar').stat().st_ino == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ['c', 'dest']


@pytest.mark.parametrize('swap', [True, False])
def test_a_new_manifest_drops_the_signature_of_the_old_one(tmp_path, monkeypatch, swap):
    """Signed for the old manifest, manifest.json.sig would only make trusting nodes refuse the new bundle."""
    dest = tmp_path / 'dest'
    dest.mkdir()
    seed(tmp_path / 'c', 'models/o/m', {'a.bin': b'a' * 1000})
    bw.BundlePlan(str(dest), [entry_for(tmp_path / 'c', 'o/m')]).apply()
    (dest / 'manifest.json.sig').write_bytes(b'a signature of the first manifest')
    assert not bw.BundlePlan(str(dest), [entry_for(tmp_path / 'c', 'o/m')]).changed  # unchanged: kept as it is
    seed(tmp_path / 'c', 'models/o/m', {'a.bin': b'A' * 1000}, commit='d' * 40)
    if not swap:
        monkeypatch.setattr(bw, '_swappable', lambda dest: False)
    bw.BundlePlan(str(dest), [entry_for(tmp_path / 'c', 'o/m')]).apply()
    assert sorted(p.name for p in dest.iterdir()) == ['SHA256SUMS', 'manifest.json', 'o--m--master.tar']


def test_tar_members_and_manifest_checks():
    model = {'id': 'o/m', 'revision': 'master', 'commit': 'c' * 40, 'created_at': 1, 'tar': 'o--m--master.tar',
             'tar_size': 10240, 'tar_sha256': 'a' * 64, 'bytes': 3, 'source_layout': 'models',
             'files': [{'path': 'b/c.bin', 'size': 1, 'sha256': 'b' * 64, 'revision': 'r'},
                       {'path': 'a', 'size': 2, 'sha256': 'c' * 64, 'revision': ''}]}
    model['metadata'] = bundle_format.metadata_list(model)
    bundle_format.validate_model(model)
    assert [(n, k) for n, k, _size in bundle_format.tar_members(model)] == [
        ('.mdl', 'metadata'), ('.msc', 'metadata'), ('.mv', 'metadata'), ('a', 'file'), ('b', 'dir'), ('b/c.bin', 'file')]
    with pytest.raises(bundle_format.BundleError, match='metadata'):
        bundle_format.validate_model(dict(model, metadata=model['metadata'][:2]))
    clash = dict(model, files=model['files'] + [{'path': 'a/x', 'size': 0, 'sha256': 'd' * 64, 'revision': ''}])
    clash['metadata'] = bundle_format.metadata_list(clash)
    with pytest.raises(bundle_format.BundleError, match='both as a file and as a directory'):
        bundle_format.validate_model(clash)


def test_golden_tar_digest():
    """The bytes of a tar are part of the format: a change here changes every bundle's sha256."""
    out = io.BytesIO()
    fd_r, fd_w = os.pipe()
    chunks = []
    reader = threading.Thread(target=lambda: chunks.append(_read_all(fd_r)))
    reader.start()
    try:
        with tw.TarWriter(fd_w, 4096, 2) as tar:
            tar.add_dir('d', MTIME)
            tar.add_bytes('d/' + 'n' * 120, b'long', MTIME)
            tar.add_bytes('d/\u00e9.txt', b'', MTIME)
            size, digest = tar.close()
    finally:
        os.close(fd_w)
        reader.join()
        os.close(fd_r)
    out.write(chunks[0])
    assert size == len(out.getvalue()) == 10240
    assert digest == hashlib.sha256(out.getvalue()).hexdigest()
    assert digest == GOLDEN
    assert out.getvalue() == tarfile_bytes([('d', 'dir', None), ('d/' + 'n' * 120, 'bytes', b'long'), ('d/\u00e9.txt', 'bytes', b'')])


def _read_all(fd):
    parts = []
    while True:
        data = os.read(fd, 65536)
        if not data:
            return b''.join(parts)
        parts.append(data)


GOLDEN = '33f3d979d886a41faecc1cd5b7fbf9e586f9a23f88153425f10e6db46277fddd'


def test_discover_needs_records_not_sdk_metadata(tmp_path):
    seed(tmp_path, 'models/o/m', {'a.bin': b'a'})                      # no .msc: still bundled
    top = seed(tmp_path, 'models/o/n', {'a.bin': b'a', 'b.bin': b'b'}, model_id='o/n')
    os.unlink(os.path.join(top, 'b.bin'))
    os.makedirs(str(tmp_path / 'models/o--p/snapshots/master'))
    (tmp_path / 'models/o--p/snapshots/master/w.bin').write_bytes(b'w')  # SDK download, no record
    wanted, warnings = bw.discover(str(tmp_path))
    assert wanted == [('o/m', 'master')]
    assert len(warnings) == 2
    assert any('o/n' in w and '1 file(s) missing' in w for w in warnings)
    assert any('o/p' in w and 'no verification record' in w for w in warnings)
    assert bw.discover(str(tmp_path), 'snapshots')[0] == []
