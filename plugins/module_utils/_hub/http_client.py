# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small HTTP(S) client on the standard library, for hubs and bundle servers.

Why not urllib: downloads need keep-alive connections per worker thread, Range
requests, and full control over redirects, so that credentials go to the origin
they belong to and never to the object store a hub redirects to.
"""


import http.client
import json
import random
import re
import ssl
import threading
import time
from urllib.parse import urljoin, urlsplit

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.proxy import ProxyChoice

REDIRECTS = (301, 302, 303, 307, 308)
RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)
MAX_REDIRECTS = 10
# A JSON answer is read into memory whole: a recursive listing of the hub's 3000 entries is a few MiB.
MAX_JSON_BYTES = 64 * 1024 * 1024
USER_AGENT = 'modelseed.fleet'
# The longest wait between two attempts that the client chooses itself (a server's Retry-After may ask for more).
MAX_BACKOFF = 30.0
# Bytes skipped at a time when a server answers a resume with the whole body.
SKIP_BUFFER = 1024 * 1024
_CONTENT_RANGE = re.compile(r'^bytes (\d+)-(\d+)/(\d+|\*)$')


class HttpError(ModelseedError):
    """A failed request. ``retryable`` marks faults worth trying again."""

    def __init__(self, message, status=None, url=None, retryable=False, retry_after=None):
        super().__init__(message)
        self.status = status
        self.url = url
        self.retryable = retryable
        self.retry_after = retry_after


def _origin(url):
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == 'https' else 80)
    return parts.scheme, (parts.hostname or '').lower(), port


def _retry_after(value):
    try:
        return min(float(value), 300.0)
    except (TypeError, ValueError):
        return None


class Response:
    def __init__(self, client, conn, key, raw, url):
        self._client, self._conn, self._key, self._raw = client, conn, key, raw
        self.status = raw.status
        self.headers = raw.headers
        self.url = url

    def read(self, size=-1):
        return self._io(lambda: self._raw.read(size) if size >= 0 else self._raw.read())

    def readinto(self, buffer):
        return self._io(lambda: self._raw.readinto(buffer))

    def _io(self, operation):
        try:
            return operation()
        except (OSError, http.client.HTTPException) as exc:
            self.close(reuse=False)
            raise HttpError('connection lost while reading %s: %s' % (self.url, exc), url=self.url, retryable=True)

    def json(self):
        """The body as JSON; ValueError when it is not JSON (or nested beyond what the parser can take)."""
        try:
            body = self.read(MAX_JSON_BYTES + 1)
        finally:
            self.close()  # kept alive only when the whole body was read
        if len(body) > MAX_JSON_BYTES:
            raise HttpError('the answer from %s is larger than %d bytes, more than any listing' % (self.url, MAX_JSON_BYTES), url=self.url)
        try:
            return json.loads(body.decode('utf-8'))
        except RecursionError:
            raise ValueError('JSON nested too deeply')

    def close(self, reuse=True):
        if self._conn is None:
            return
        if reuse and self._raw.isclosed() and not self._raw.will_close:
            self._client._release(self._key, self._conn)
        else:
            self._raw.close()
            self._conn.close()
        self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(reuse=exc[0] is None)


class HttpClient:
    """Keep-alive connections per thread, redirects, retries with backoff.

    ``auth_headers`` are sent only to ``auth_url``'s scheme, host and port. ``proxy`` is the HTTP proxy of every
    request: None takes the environment's (http_proxy, https_proxy, no_proxy), '' none (see ProxyChoice).
    """

    def __init__(self, timeout=60.0, retries=5, backoff=1.0, validate_certs=True, ca_path=None,
                 auth_url=None, auth_headers=None, proxy=None):
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._auth_origin = _origin(auth_url) if auth_url else None
        self._auth_headers = dict(auth_headers or {})
        if validate_certs:
            self._ssl = ssl.create_default_context(cafile=ca_path)
        else:
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        self._local = threading.local()
        self._proxies = ProxyChoice(proxy)

    # -- connections -------------------------------------------------------

    def _pool(self):
        pool = getattr(self._local, 'pool', None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def _release(self, key, conn):
        old = self._pool().pop(key, None)
        if old is not None and old is not conn:
            old.close()
        self._pool()[key] = conn

    def _connect(self, scheme, host, port, proxy):
        target = (proxy.host, proxy.port) if proxy else (host, port)
        if scheme == 'https':
            conn = http.client.HTTPSConnection(target[0], target[1], timeout=self.timeout, context=self._ssl)
            if proxy:
                conn.set_tunnel(host, port, headers=proxy.headers)
        else:
            conn = http.client.HTTPConnection(target[0], target[1], timeout=self.timeout)
        return conn

    # -- requests ----------------------------------------------------------

    def _send(self, method, url, headers):
        parts = urlsplit(url)
        if parts.scheme not in ('http', 'https') or not parts.hostname:
            raise HttpError('unsupported URL %r' % (url,), url=url)
        key = _origin(url)
        # Decided per request, not per connection: a kept-alive connection to a proxy needs the proxy's form too.
        proxy = self._proxies.for_origin(*key[:2])
        conn = self._pool().pop(key, None)
        if conn is None:
            conn = self._connect(*key, proxy=proxy)
        all_headers = {'User-Agent': USER_AGENT, 'Accept-Encoding': 'identity'}
        if proxy and key[0] == 'http':
            # A plain-HTTP request to a proxy names the whole URL; an https one went through CONNECT.
            target = url
            all_headers.update(proxy.headers)
        else:
            target = (parts.path or '/') + ('?' + parts.query if parts.query else '')
        if key == self._auth_origin:
            all_headers.update(self._auth_headers)
        all_headers.update(headers or {})
        via = ' through the proxy %s' % proxy.name if proxy else ''
        try:
            conn.request(method, target, headers=all_headers)
            raw = conn.getresponse()
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise HttpError('TLS certificate of %s not trusted: %s' % (parts.netloc, exc.verify_message or exc), url=url)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if proxy and str(exc).startswith('Tunnel connection failed: 407'):  # CONNECT refused, as http.client says it
                raise _proxy_wants_credentials(proxy, url)
            raise HttpError('cannot reach %s%s: %s' % (parts.netloc, via, exc or type(exc).__name__), url=url, retryable=True)
        if raw.status == 407 and proxy:
            conn.close()
            raise _proxy_wants_credentials(proxy, url)
        return Response(self, conn, key, raw, url)

    def open(self, url, headers=None, method='GET'):
        """One request, following redirects; a status >= 400 raises HttpError."""
        seen = 0
        while True:
            resp = self._send(method, url, headers)
            if resp.status in REDIRECTS and resp.headers.get('Location'):
                resp.read()
                resp.close()
                seen += 1
                if seen > MAX_REDIRECTS:
                    raise HttpError('too many redirects from %s' % (url,), status=resp.status, url=url)
                url = urljoin(url, resp.headers['Location'])
                if resp.status == 303:
                    method = 'GET'
                continue
            if resp.status >= 400:
                body = resp.read(2048)
                resp.close()
                raise HttpError(
                    'HTTP %d from %s%s' % (resp.status, url, _error_detail(body)), status=resp.status, url=url,
                    retryable=resp.status in RETRYABLE_STATUS, retry_after=_retry_after(resp.headers.get('Retry-After')))
            return resp

    def backoff_delay(self, attempt, exc=None):
        """Seconds to wait before attempt ``attempt + 1``: the one backoff rule of every request and stream.

        The server's Retry-After when it sent one; else ``backoff`` doubled per failed attempt, at most
        MAX_BACKOFF, with jitter (a half to the whole of it) so that a fleet that failed together does not
        come back in step. ``backoff`` 0 means no wait.
        """
        if exc is not None and exc.retry_after is not None:
            return exc.retry_after
        return min(self.backoff * (2 ** (attempt - 1)), MAX_BACKOFF) * (0.5 + random.random() / 2)

    def wait_or_raise(self, exc, attempt, on_retry=None):
        """After the ``attempt``-th failure ``exc``: raise it when it is not worth retrying or the retries are
        spent, else wait by the backoff rule."""
        if not exc.retryable or attempt > self.retries:
            raise exc
        delay = self.backoff_delay(attempt, exc)
        if on_retry:
            on_retry(exc, attempt, delay)
        if delay > 0:
            time.sleep(delay)

    def with_retries(self, action, on_retry=None):
        """Run ``action()``, retrying retryable HttpErrors by the backoff rule."""
        attempt = 0
        while True:
            try:
                return action()
            except HttpError as exc:
                attempt += 1
                self.wait_or_raise(exc, attempt, on_retry)

    def get_json(self, url):
        return self.with_retries(lambda: self.open(url, headers={'Accept': 'application/json'}).json())

    def close(self):
        for conn in self._pool().values():
            conn.close()
        self._pool().clear()


def _proxy_wants_credentials(proxy, url):
    """Not worth a retry: the same credentials get the same answer."""
    return HttpError('HTTP 407 from the proxy %s: it wants other credentials (http://user:password@host:port)' % proxy.name,
                     status=407, url=url)


def _error_detail(body):
    """The hub's own message, when it sent one, shortened for a user."""
    try:
        message = json.loads(body.decode('utf-8')).get('Message')
    except (ValueError, AttributeError, UnicodeDecodeError):
        return ''
    return ': %s' % (message,) if message else ''


class ResumableGet:
    """A GET read as one stream with ``readinto``, from byte ``start`` on, whatever breaks on the way.

    A body that breaks off is asked for again with ``Range: bytes=<pos>-``, and a 206 must say (in
    Content-Range) that it starts there. A 200 is the whole body again (the server ignored Range): with
    ``on_restart`` the caller is told, drops what it holds and the stream starts over at byte 0;
    without, the bytes delivered already are skipped, and the reader never sees the seam. A body that
    ends before its Content-Length, or before ``expected_size``, broke off too. Every failure, of a
    request or of a body, counts against the client's ``retries`` over the whole stream and waits by
    the client's backoff rule. ``label`` names the stream in errors (the URL by default).
    """

    def __init__(self, client, url, start=0, expected_size=None, label=None, on_restart=None):
        self.client = client
        self.url = url
        self.pos = start
        self.expected_size = expected_size
        self.label = label or url
        self.on_restart = on_restart
        self.failures = 0
        self._resp = None
        self._end = None  # stream position where the current body ends, when its length is known
        self._done = False

    def readinto(self, view):
        while not self._done:
            try:
                if self._resp is None:
                    self._open()
                n = self._resp.readinto(view)
                if not n and len(view):
                    self._check_complete()
                    self._resp.close()  # read to its end: the connection can serve the next request
                    self._resp, self._done = None, True
                self.pos += n
                return n
            except HttpError as exc:
                self.close()
                self.failures += 1
                self.client.wait_or_raise(exc, self.failures)
        return 0

    def _open(self):
        resp = self.client.open(self.url, headers={'Range': 'bytes=%d-' % self.pos} if self.pos else {})
        try:
            length = resp.headers.get('Content-Length')
            length = int(length) if length and length.isdigit() else None
            if self.pos and resp.status == 206:
                self._check_range(resp.headers.get('Content-Range'))
                length = None if length is None else self.pos + length
            elif self.pos and self.on_restart is not None:
                self._restart()
            elif self.pos:
                self._skip(resp)
        except BaseException:
            resp.close(reuse=False)
            raise
        self._resp, self._end = resp, length

    def _check_range(self, content_range):
        match = _CONTENT_RANGE.match(content_range or '')
        if match and int(match.group(1)) == self.pos:
            return
        message = '%s: the server answered a resume at byte %d with Content-Range %r' % (self.label, self.pos, content_range)
        if self.on_restart is None:
            raise HttpError(message, url=self.url)
        self._restart()  # the bytes held may be what is wrong: the next attempt fetches the whole body
        raise HttpError(message, url=self.url, retryable=True)

    def _restart(self):
        self.on_restart()
        self.pos = 0

    def _skip(self, resp):
        left = self.pos
        scratch = memoryview(bytearray(min(left, SKIP_BUFFER)))
        while left:
            n = resp.readinto(scratch[:min(left, len(scratch))])
            if not n:
                raise HttpError('%s ended before byte %d on a retry' % (self.label, self.pos), url=self.url, retryable=True)
            left -= n

    def _check_complete(self):
        if self._end is not None and self.pos < self._end:
            raise HttpError('%s: connection closed at byte %d of %d' % (self.label, self.pos, self._end), url=self.url, retryable=True)
        if self.expected_size is not None and self.pos < self.expected_size:
            raise HttpError('%s: transfer ended after %d of %d bytes' % (self.label, self.pos, self.expected_size),
                            url=self.url, retryable=True)

    def close(self):
        if self._resp is not None:
            self._resp.close(reuse=False)
            self._resp = None
