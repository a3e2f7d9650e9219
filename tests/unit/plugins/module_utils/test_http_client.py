"""http_client: ResumableGet against a real loopback file server, and the one backoff rule."""

import http.server
import os
import sys
import threading

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._hub import http_client
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import MAX_BACKOFF, HttpClient, HttpError, ResumableGet
from support.fileserver import FileServer
from support.interrupt import wait_until

DATA = os.urandom((1 << 20) + 333)
NAME = 'blob.bin'
CUT = 300_001


@pytest.fixture
def server(tmp_path):
    (tmp_path / NAME).write_bytes(DATA)
    with FileServer(tmp_path) as served:
        yield served


@pytest.fixture
def sleeps(monkeypatch):
    """The waits http_client asks for (and gets): what the backoff rule chose, without timing anything."""
    asked, real = [], http_client.time.sleep

    def sleep(seconds):
        if sys._getframe(1).f_globals.get('__name__') == http_client.__name__:
            asked.append(seconds)
        real(seconds)

    monkeypatch.setattr(http_client.time, 'sleep', sleep)
    return asked


def read_all(body, chunk=64 << 10):
    out = bytearray()
    view = memoryview(bytearray(chunk))
    try:
        while True:
            n = body.readinto(view)
            if not n:
                return bytes(out)
            out += view[:n]
    finally:
        body.close()


def bodies(server, count):
    """(Range, status) of the requests for NAME, once ``count`` are logged: the server logs a request after its
    answer, and the client may be done with that answer before."""
    def asked():
        return [(r.range, r.status) for r in server.log.entries() if r.file == NAME]
    wait_until(lambda: len(asked()) >= count, timeout=10)
    return asked()


@pytest.mark.parametrize('action', ['truncate', 'reset'])
def test_a_cut_body_resumes_where_it_broke(server, action):
    server.faults.add(action=action, file=NAME, after_bytes=CUT, times=1)
    body = ResumableGet(HttpClient(retries=2, backoff=0), server.url + NAME)
    assert read_all(body) == DATA
    first, again = bodies(server, 2)
    assert first == (None, 200)
    # A clean close delivers all it sent; a reset may lose bytes in flight, so the resume starts at or before the cut.
    if action == 'truncate':
        assert again == ('bytes=%d-' % CUT, 206)
    else:
        assert again == (None, 200) or (again[1] == 206 and 0 < int(again[0][len('bytes='):-1]) <= CUT)
    assert body.failures == 1


def test_range_ignored_skips_what_was_delivered(server):
    server.faults.add(action='reply', status=200, body=DATA, file=NAME, times=1)  # the whole body, whatever was asked
    body = ResumableGet(HttpClient(retries=0), server.url + NAME, start=CUT)
    assert read_all(body) == DATA[CUT:]
    assert bodies(server, 1) == [('bytes=%d-' % CUT, 200)]


def test_range_ignored_tells_the_caller_it_restarted(server):
    server.faults.add(action='reply', status=200, body=DATA, file=NAME, times=1)
    restarts = []
    body = ResumableGet(HttpClient(retries=0), server.url + NAME, start=CUT, on_restart=lambda: restarts.append(body.pos))
    assert read_all(body) == DATA
    assert restarts == [CUT] and body.pos == len(DATA)


class ShiftedRanges(http.server.BaseHTTPRequestHandler):
    """Answers ``Range: bytes=N-`` with the bytes from N - 1 on, and says so in Content-Range."""

    protocol_version = 'HTTP/1.1'

    def do_GET(self):
        wanted = self.headers.get('Range')
        self.server.asked.append(wanted)  # before the answer: the client may hang up as soon as it has read it
        start = max(0, int(wanted[len('bytes='):-1]) - 1) if wanted else 0
        self.send_response(206 if wanted else 200)
        if wanted:
            self.send_header('Content-Range', 'bytes %d-%d/%d' % (start, len(DATA) - 1, len(DATA)))
        self.send_header('Content-Length', str(len(DATA) - start))
        self.end_headers()
        self.wfile.write(DATA[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def shifted():
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), ShiftedRanges)
    httpd.asked = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_wrong_content_range_fails_a_stream(shifted):
    url = 'http://127.0.0.1:%d/x' % shifted.server_address[1]
    body = ResumableGet(HttpClient(retries=3, backoff=0), url, start=CUT)
    with pytest.raises(HttpError, match="answered a resume at byte %d with Content-Range 'bytes %d-" % (CUT, CUT - 1)) as caught:
        read_all(body)
    assert not caught.value.retryable and shifted.asked == ['bytes=%d-' % CUT]


def test_a_wrong_content_range_restarts_a_caller_that_can(shifted):
    url = 'http://127.0.0.1:%d/x' % shifted.server_address[1]
    restarts = []
    body = ResumableGet(HttpClient(retries=1, backoff=0), url, start=CUT, on_restart=lambda: restarts.append(body.pos))
    assert read_all(body) == DATA
    assert restarts == [CUT] and shifted.asked == ['bytes=%d-' % CUT, None]


def test_a_body_shorter_than_expected_is_reported(server):
    body = ResumableGet(HttpClient(retries=0), server.url + NAME, expected_size=len(DATA) + 10, label='o/m: blob.bin')
    with pytest.raises(HttpError, match='o/m: blob.bin: transfer ended after %d of %d bytes' % (len(DATA), len(DATA) + 10)):
        read_all(body)
    assert bodies(server, 1) == [(None, 200)]


def test_a_closed_connection_names_the_byte(server):
    server.faults.add(action='truncate', file=NAME, after_bytes=CUT)
    with pytest.raises(HttpError, match='connection closed at byte %d of %d' % (2 * CUT, len(DATA))):
        read_all(ResumableGet(HttpClient(retries=1, backoff=0), server.url + NAME))


def test_retry_after_is_honoured(server, sleeps):
    server.faults.add(action='status', status=429, retry_after=1, file=NAME, times=1)
    assert read_all(ResumableGet(HttpClient(retries=1, backoff=0), server.url + NAME)) == DATA
    assert sleeps == [1.0]
    assert bodies(server, 2) == [(None, 429), (None, 200)]


def test_backoff_zero_makes_no_sleep(server, sleeps):
    server.faults.add(action='status', status=503, file=NAME, times=2)
    server.faults.add(action='truncate', file=NAME, after_bytes=CUT, times=1)
    client = HttpClient(retries=3, backoff=0)
    assert read_all(ResumableGet(client, server.url + NAME)) == DATA
    assert sleeps == []
    assert [status for _range, status in bodies(server, 4)] == [503, 503, 200, 206]


def test_retries_are_counted_over_the_whole_stream(server, sleeps):
    server.faults.add(action='status', status=503, file=NAME)
    with pytest.raises(HttpError, match='HTTP 503') as caught:
        read_all(ResumableGet(HttpClient(retries=2, backoff=0.01), server.url + NAME))
    assert caught.value.status == 503 and len(bodies(server, 3)) == 3 and len(sleeps) == 2


def test_backoff_doubles_with_bounded_jitter_and_a_cap():
    client = HttpClient(backoff=0.5)
    for attempt in range(1, 12):
        full = min(0.5 * 2 ** (attempt - 1), MAX_BACKOFF)
        delays = [client.backoff_delay(attempt) for _draw in range(200)]
        assert all(full / 2 <= delay <= full for delay in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered: a fleet that failed together does not come back in step
    assert client.backoff_delay(3, HttpError('busy', retryable=True, retry_after=7.0)) == 7.0
    assert HttpClient(backoff=0).backoff_delay(5) == 0


def test_with_retries_waits_by_the_same_rule(server, sleeps):
    server.faults.add(action='status', status=503, file=NAME, times=2)
    client = HttpClient(retries=2, backoff=0.01)
    assert client.with_retries(lambda: client.open(server.url + NAME).read()) == DATA
    assert len(sleeps) == 2 and 0.005 <= sleeps[0] <= 0.01 and 0.01 <= sleeps[1] <= 0.02
