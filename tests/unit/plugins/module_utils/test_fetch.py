"""fetch_file against the real loopback hub: resume, restart, verification."""

import contextlib
import hashlib
import os

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._hub.api import HubApi
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.fetch import FetchError, fetch_file
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpClient, HttpError
from support.interrupt import wait_until
from support.mshub import MsHub, make_repo

DATA = os.urandom(3 << 20)
SIZE = len(DATA)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(scope='module')
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp('hub')
    make_repo(root, 'o/m', {'w.bin': DATA, 'empty': b''})
    with MsHub(root, redirect_threshold=1 << 20) as server:
        yield server


def fetch(hub, tmp_path, size=SIZE, sha=SHA, name='w.bin', retries=2):
    client = HttpClient(retries=retries, backoff=0.01)
    url = HubApi(client, hub.url).file_url('o/m', 'master', name)
    return fetch_file(client, url, str(tmp_path / 'part'), str(tmp_path / 'final'), size, sha, 'o/m: ' + name)


def test_fresh_download(hub, tmp_path):
    assert fetch(hub, tmp_path) == len(DATA)
    assert (tmp_path / 'final').read_bytes() == DATA
    assert not (tmp_path / 'part').exists()
    assert (tmp_path / 'final').stat().st_mode & 0o777 == 0o644


def test_resume_sends_range_and_keeps_bytes(hub, tmp_path):
    kept = 1234567
    (tmp_path / 'part').write_bytes(DATA[:kept])
    mark = len(hub.log)
    assert fetch(hub, tmp_path) == len(DATA) - kept
    assert (tmp_path / 'final').read_bytes() == DATA
    body = [r for r in hub.log.entries(mark) if r.download]
    assert body[0].range == 'bytes=%d-' % kept and body[0].sent == len(DATA) - kept


def test_bad_resumed_bytes_restart_from_zero(hub, tmp_path):
    (tmp_path / 'part').write_bytes(b'x' * 1000)
    assert fetch(hub, tmp_path) == len(DATA) - 1000 + len(DATA)
    assert (tmp_path / 'final').read_bytes() == DATA


def test_oversized_partial_is_dropped(hub, tmp_path):
    (tmp_path / 'part').write_bytes(DATA + b'extra')
    assert fetch(hub, tmp_path) == len(DATA)
    assert (tmp_path / 'final').read_bytes() == DATA


def test_wrong_hash_keeps_nothing(hub, tmp_path):
    with pytest.raises(FetchError, match='does not match'):
        fetch(hub, tmp_path, sha='0' * 64)
    assert not (tmp_path / 'final').exists() and not (tmp_path / 'part').exists()


def test_more_bytes_than_listed_fails(hub, tmp_path):
    with pytest.raises(FetchError, match='more than'):
        fetch(hub, tmp_path, size=1000)
    assert not (tmp_path / 'final').exists()


@contextlib.contextmanager
def fault(hub, **spec):
    """``spec`` injected into the hub for the ``with`` block only: no other test meets it."""
    hub.faults.add(**spec)
    try:
        yield
    finally:
        hub.faults.clear()


def test_connection_reset_is_resumed(hub, tmp_path):
    with fault(hub, action='reset', file='w.bin', after_bytes=500000, times=1):
        assert fetch(hub, tmp_path) == len(DATA)
    assert (tmp_path / 'final').read_bytes() == DATA


def test_server_errors_are_retried_then_reported(hub, tmp_path):
    hub.faults.add(action='status', status=503, file='w.bin', times=1)
    assert fetch(hub, tmp_path) == len(DATA)
    with fault(hub, action='status', status=503, file='w.bin'), pytest.raises(HttpError, match='HTTP 503'):
        fetch(hub, tmp_path / 'sub', retries=1)


def test_empty_file_needs_no_request(hub, tmp_path):
    mark = len(hub.log)
    assert fetch(hub, tmp_path, size=0, sha=hashlib.sha256(b'').hexdigest(), name='empty') == 0
    assert (tmp_path / 'final').read_bytes() == b''
    # By file: the hub may log the last request of an earlier test only after its client went on.
    assert [r for r in hub.log.entries(mark) if r.file == 'empty'] == []


def test_range_ignored_restarts_the_file_and_its_hash(hub, tmp_path):
    (tmp_path / 'part').write_bytes(b'x' * 1000)  # not the hub's bytes: only a restart from zero ends verified
    with fault(hub, action='reply', status=200, body=DATA, file='w.bin', times=1):  # the whole body, whatever was asked
        assert fetch(hub, tmp_path) == len(DATA)
    assert (tmp_path / 'final').read_bytes() == DATA


def test_a_resume_answered_with_another_range_starts_over(hub, tmp_path):
    (tmp_path / 'part').write_bytes(DATA[:1000])
    mark = len(hub.log)
    with fault(hub, action='reply', status=206, body=DATA, file='w.bin', times=1):  # no Content-Range: not where asked
        assert fetch(hub, tmp_path) == len(DATA)
    assert (tmp_path / 'final').read_bytes() == DATA

    def asked():
        return [r.range for r in hub.log.entries(mark) if r.download]
    wait_until(lambda: len(asked()) >= 2, timeout=10)  # the hub logs a request after its answer
    assert asked() == ['bytes=1000-', None]
