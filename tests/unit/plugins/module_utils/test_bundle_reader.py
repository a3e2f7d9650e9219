"""bundle_reader: manifest checks, the streaming tar judge, and resumed http streams."""

import errno
import hashlib
import io
import os
import tarfile

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.install import Perms, StagingSink
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.reader import Bundle, DirSource, HttpStream
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tar_reader import extract_tar
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpClient, HttpError
from support.bundles import Member, ModelSpec, members_of, raw_tar, write_bundle

FILES = {
    'config.json': b'{"a": 1}',
    'weights/w.bin': os.urandom((1 << 20) + 3),
    'sub/dir/deep.txt': b'deep',
    'empty': b'',
    'x' * 40 + '/' + 'y' * 90: b'a name longer than 100 bytes',
    'ünïcode.txt': b'u',
}
SPEC = ModelSpec('o/m', FILES)


def manifest_entry(spec, tar):
    entry = spec.entry()
    entry.update(tar_size=len(tar), tar_sha256=hashlib.sha256(tar).hexdigest())
    return entry


def extract(tmp_path, tar, spec=SPEC, buffer_size=1 << 20, entry=None):
    sink = StagingSink(str(tmp_path / 'stage'), Perms())
    sink.create()
    return extract_tar(io.BytesIO(tar), entry or manifest_entry(spec, tar), sink, buffer_size=buffer_size)


@pytest.mark.parametrize('buffer_size', [512, 1536, 4096, 1 << 20])
def test_valid_tar_any_buffer_size(tmp_path, buffer_size):
    tar = raw_tar(members_of(SPEC))
    stats = extract(tmp_path, tar, buffer_size=buffer_size)
    assert sorted(stats) == sorted(FILES)
    for path, data in FILES.items():
        target = tmp_path / 'stage' / path
        assert target.read_bytes() == data
        assert target.stat().st_mtime == SPEC.created_at and stats[path].st_size == len(data)
    # Metadata members are checked, not written: the installer writes what its layout needs.
    assert not (tmp_path / 'stage' / '.msc').exists()


def test_gnu_format_long_names_are_read(tmp_path):
    tar = raw_tar(members_of(SPEC), fmt=tarfile.GNU_FORMAT)
    assert sorted(extract(tmp_path, tar)) == sorted(FILES)


def test_bundle_from_directory(tmp_path):
    write_bundle(tmp_path / 'b', [SPEC])
    bundle = Bundle(DirSource(str(tmp_path / 'b')))
    sink = StagingSink(str(tmp_path / 'stage'), Perms())
    sink.create()
    assert sorted(bundle.extract(bundle.models[0], sink)) == sorted(FILES)


def _with(extra, fmt=tarfile.PAX_FORMAT):
    return raw_tar(members_of(SPEC) + list(extra), fmt=fmt)


def _raw_header(name, typeflag, payload=b''):
    """A ustar header (raw name bytes allowed, valid checksum) and its padded payload."""
    name = name if isinstance(name, bytes) else name.encode()
    info = tarfile.TarInfo('placeholder')
    info.type = typeflag
    info.size = len(payload)
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[0:100] = name.ljust(100, b'\0')
    block[148:156] = b' ' * 8
    block[148:156] = b'%06o\0 ' % sum(block)
    return bytes(block) + payload + b'\0' * (-len(payload) % 512)


def _insert(tar, blocks):
    """``blocks`` placed before the end-of-archive marker of ``tar``."""
    end = len(tar.rstrip(b'\0'))
    end = (end + 511) // 512 * 512
    return tar[:end] + blocks + b'\0' * 1024


def _corrupt_checksum(tar):
    data = bytearray(tar)
    data[148:156] = b'0000000\0'
    return bytes(data)


def _pax(records):
    body = b''
    for key, value in records:
        line = b' ' + key + b'=' + value + b'\n'
        length = len(line) + 1
        while len(str(length)) + len(line) != length:
            length = len(str(length)) + len(line)
        body += str(length).encode() + line
    return body


CASES = {
    'dotdot': (_with([Member('../x', data=b'x')]), 'unsafe name'),
    'pax dotdot': (_with([Member('../' * 10 + 'z' * 100, data=b'x')]), 'unsafe name'),
    'gnu longname dotdot': (_with([Member('../' * 10 + 'z' * 100, data=b'x')], fmt=tarfile.GNU_FORMAT), 'unsafe name'),
    'absolute': (_with([Member('/etc/x', data=b'x')]), 'unsafe name'),
    'dot component': (_with([Member('./config.json', data=b'x')]), 'unsafe name'),
    'symlink': (_with([Member('l', kind='symlink', linkname='../../etc')]), 'pointing outside the model'),
    'hardlink': (_with([Member('h', kind='hardlink', linkname='config.json')]), 'hard link'),
    'fifo': (_with([Member('f', kind='fifo')]), 'FIFO'),
    'device': (_with([Member('d', kind='chr')]), 'character device'),
    'duplicate': (_with([Member('empty')]), 'appears twice'),
    'not listed': (_with([Member('new.txt', data=b'n')]), 'not in the manifest'),
    'global pax header': (_insert(raw_tar(members_of(SPEC)), _raw_header('g', tarfile.XGLTYPE, _pax([(b'path', b'abc')]))),
                          'pax global header'),
    'pax linkpath on a link': (_insert(raw_tar(members_of(SPEC)),
                                       _raw_header('p', tarfile.XHDTYPE, _pax([(b'linkpath', b'/etc/passwd')]))
                                       + _raw_header('q', tarfile.SYMTYPE)), "-> '/etc/passwd'"),
    'sparse': (_insert(raw_tar(members_of(SPEC)),
                       _raw_header('p', tarfile.XHDTYPE, _pax([(b'GNU.sparse.major', b'1')])) + _raw_header('s', tarfile.REGTYPE)),
               'sparse'),
    'two extended headers': (_insert(raw_tar(members_of(SPEC)), _raw_header('p', tarfile.XHDTYPE, _pax([(b'path', b'a')])) * 2),
                             'two extended headers'),
    'bad pax': (_insert(raw_tar(members_of(SPEC)), _raw_header('p', tarfile.XHDTYPE, b'99 path=\n')), 'malformed pax'),
    'corrupt header': (_corrupt_checksum(raw_tar(members_of(SPEC))), 'corrupt'),
    'not utf-8 name': (_insert(raw_tar(members_of(SPEC)), _raw_header(b'\xff\xfe', tarfile.REGTYPE)), 'not UTF-8'),
    'data after the end': (raw_tar(members_of(SPEC)) + b'\x01' + b'\0' * 511, 'after its end-of-archive marker'),
    'no end marker': (raw_tar(members_of(SPEC)).rstrip(b'\0')[:-100], 'ends early'),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_hostile_members_are_refused_before_they_are_written(tmp_path, case):
    tar, message = CASES[case]
    with pytest.raises(BundleError) as caught:
        extract(tmp_path, tar)
    assert message in str(caught.value) and 'o/m@master' in str(caught.value)
    assert not (tmp_path / 'x').exists() and not os.path.lexists(tmp_path / 'stage' / 'l')


def test_a_tar_longer_or_shorter_than_the_manifest_says(tmp_path):
    tar = raw_tar(members_of(SPEC))
    entry = manifest_entry(SPEC, tar)
    with pytest.raises(BundleError, match='longer than'):
        extract(tmp_path, tar + b'\0' * 512, entry=entry)
    short = dict(entry, tar_size=len(tar) + 512)
    with pytest.raises(BundleError, match='ends after'):
        extract(tmp_path, tar, entry=short)
    wrong = dict(entry, tar_sha256='0' * 64)
    with pytest.raises(BundleError, match='has sha256'):
        extract(tmp_path, tar, entry=wrong)


def test_size_and_hash_lies(tmp_path):
    tar = raw_tar(members_of(SPEC))
    entry = manifest_entry(SPEC, tar)
    lie = dict(entry, files=[dict(f, sha256='1' * 64) if f['path'] == 'config.json' else f for f in entry['files']])
    with pytest.raises(BundleError, match="'config.json' has sha256"):
        extract(tmp_path, tar, entry=lie)
    assert not (tmp_path / 'stage/config.json').exists()  # the partial member is gone


class FailingSink(StagingSink):
    def __init__(self, top, perms, fail_after):
        super().__init__(top, perms)
        self.left = fail_after

    def open_file(self, rel, size):
        handle = super().open_file(rel, size)
        original = handle.write

        def write(view):
            self.left -= len(view)
            if self.left < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            original(view)

        handle.write = write
        return handle


def test_a_full_disk_stops_the_stream_and_closes_every_file(tmp_path):
    tar = raw_tar(members_of(SPEC))
    sink = FailingSink(str(tmp_path / 'stage'), Perms(), fail_after=1 << 19)
    sink.create()
    with pytest.raises(OSError) as caught:
        extract_tar(io.BytesIO(tar), manifest_entry(SPEC, tar), sink, buffer_size=1 << 16)
    assert caught.value.errno == errno.ENOSPC
    assert not sink._open


def test_manifest_must_match_sha256sums(tmp_path):
    write_bundle(tmp_path / 'b', [SPEC])
    manifest = tmp_path / 'b' / bundle_format.MANIFEST
    manifest.write_bytes(manifest.read_bytes().replace(b'"o/m"', b'"o/n"'))
    with pytest.raises(BundleError, match='SHA256SUMS says'):
        Bundle(DirSource(str(tmp_path / 'b')))


def test_sums_must_agree_with_the_manifest_about_a_tar(tmp_path):
    write_bundle(tmp_path / 'b', [SPEC])
    sums = tmp_path / 'b' / bundle_format.SUMS
    lines = [line if bundle_format.MANIFEST in line else '0' * 64 + line[64:] for line in sums.read_text().splitlines()]
    sums.write_text('\n'.join(lines) + '\n')
    with pytest.raises(BundleError, match='the manifest says'):
        Bundle(DirSource(str(tmp_path / 'b')))


def test_missing_files(tmp_path):
    write_bundle(tmp_path / 'b', [SPEC])
    (tmp_path / 'b' / SPEC.entry()['tar']).unlink()
    bundle = Bundle(DirSource(str(tmp_path / 'b')))
    with pytest.raises(BundleError, match='o/m@master: .*missing from the bundle'):
        bundle.extract(bundle.models[0], StagingSink(str(tmp_path / 's'), Perms()))
    (tmp_path / 'b' / bundle_format.MANIFEST).unlink()
    with pytest.raises(BundleError, match='manifest.json is missing'):
        Bundle(DirSource(str(tmp_path / 'b')))


# -- HttpStream ---------------------------------------------------------------------------------


class FakeResponse:
    def __init__(self, data, status, headers, break_after=None):
        self.data, self.status, self.headers = io.BytesIO(data), status, headers
        self.break_after = break_after

    def readinto(self, view):
        if self.break_after is not None and self.data.tell() >= self.break_after:
            raise HttpError('connection lost', retryable=True)
        limit = len(view) if self.break_after is None else min(len(view), self.break_after - self.data.tell())
        return self.data.readinto(view[:limit])

    def close(self, reuse=True):
        pass


class FakeClient(HttpClient):
    """The real client's retries and backoff rule, with answers made up here (breaks where the tests say)."""

    def __init__(self, body, honour_range=True, breaks=(1000,)):
        super().__init__(retries=3, backoff=0.0)
        self.body, self.honour_range, self.breaks = body, honour_range, list(breaks)
        self.requests = []

    def open(self, url, headers=None):
        wanted = (headers or {}).get('Range')
        self.requests.append(wanted)
        start = int(wanted[6:-1]) if wanted else 0
        brk = self.breaks.pop(0) if self.breaks else None
        if wanted and self.honour_range:
            headers = {'Content-Range': 'bytes %d-%d/%d' % (start, len(self.body) - 1, len(self.body)),
                       'Content-Length': str(len(self.body) - start)}
            return FakeResponse(self.body[start:], 206, headers, None if brk is None else brk - start)
        return FakeResponse(self.body, 200, {'Content-Length': str(len(self.body))}, brk)


@pytest.mark.parametrize('honour_range', [True, False])
def test_http_stream_resumes_after_a_dropped_connection(honour_range):
    body = os.urandom(5000)
    client = FakeClient(body, honour_range=honour_range, breaks=(1000, 3000))
    stream = HttpStream(client, 'http://x/t.tar', len(body))
    out = bytearray()
    buf = bytearray(700)
    while True:
        n = stream.readinto(memoryview(buf))
        if not n:
            break
        out += buf[:n]
    assert bytes(out) == body
    assert client.requests == [None, 'bytes=1000-', 'bytes=3000-']


def test_http_stream_gives_up_after_its_retries():
    body = os.urandom(5000)
    client = FakeClient(body, breaks=(100, 200, 300, 400, 500))
    stream = HttpStream(client, 'http://x/t.tar', len(body))
    with pytest.raises(HttpError, match='connection lost'):
        while stream.readinto(memoryview(bytearray(64))):
            pass
