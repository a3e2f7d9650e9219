"""proxy: which proxy a request takes (option, none, environment), and what HttpClient sends a real one on loopback."""

import base64
import http.server
import select
import socket
import ssl
import threading

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpClient, HttpError
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.proxy import Proxy, ProxyChoice
from support.tls import ensure_tls

ENVIRONMENT = ('http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'all_proxy', 'ALL_PROXY')


@pytest.fixture
def environment(monkeypatch):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def basic(user, password):
    return 'Basic ' + base64.b64encode(('%s:%s' % (user, password)).encode()).decode()


def test_a_proxy_url_gives_address_name_and_credentials():
    proxy = Proxy('http://fleet:p%40ss%20word@squid.example:3128/')
    assert (proxy.host, proxy.port, proxy.name) == ('squid.example', 3128, 'http://squid.example:3128')
    assert proxy.headers == {'Proxy-Authorization': basic('fleet', 'p@ss word')}
    assert (Proxy('squid.example:3128').name, Proxy('squid.example:3128').headers) == ('http://squid.example:3128', {})
    assert Proxy('http://[::1]').name == 'http://[::1]:80'


@pytest.mark.parametrize('url, shown', [
    ('https://u:secret@squid.example:3128', 'https://squid.example:3128'),
    ('socks5://squid.example:1080', 'socks5://squid.example:1080'),
    ('http://squid.example:3128/bundle', 'http://squid.example:3128/bundle'),
    ('http://:3128', 'http://:3128'),
])
def test_a_proxy_that_is_not_plain_http_is_refused_without_its_password(url, shown):
    with pytest.raises(ValueError) as caught:
        Proxy(url)
    assert str(caught.value) == 'a proxy is http://[user:password@]host:port, got %s' % shown


def test_unset_takes_the_environment_with_no_proxy(environment):
    environment.setenv('http_proxy', 'http://env-proxy:3128')
    environment.setenv('no_proxy', 'direct.example,127.0.0.1')
    choice = ProxyChoice(None)
    assert choice.for_origin('http', 'staging.example').name == 'http://env-proxy:3128'
    assert choice.for_origin('http', 'direct.example') is None
    assert choice.for_origin('http', '127.0.0.1') is None
    assert choice.for_origin('https', 'staging.example') is None  # https_proxy is not set


def test_an_empty_setting_turns_the_environment_off(environment):
    environment.setenv('http_proxy', 'http://env-proxy:3128')
    environment.setenv('https_proxy', 'http://env-proxy:3128')
    choice = ProxyChoice('')
    assert choice.for_origin('http', 'staging.example') is None
    assert choice.for_origin('https', 'staging.example') is None


def test_a_set_proxy_wins_over_the_environment_and_its_no_proxy(environment):
    environment.setenv('http_proxy', 'http://env-proxy:3128')
    environment.setenv('no_proxy', 'staging.example')
    choice = ProxyChoice('http://squid.example:3128')
    for scheme in ('http', 'https'):
        assert choice.for_origin(scheme, 'staging.example').name == 'http://squid.example:3128'


class _Recording(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def _refused(self):
        """407 when the server wants credentials (``required``) other than those sent."""
        required = getattr(self.server, 'required', None)
        if required is None or self.headers.get('Proxy-Authorization') == required:
            return False
        self.send_response(407)
        self.send_header('Proxy-Authenticate', 'Basic realm="test"')
        self.send_header('Content-Length', '0')
        self.end_headers()
        return True

    def do_GET(self):
        self.server.seen.append((self.client_address[1], self.path, self.headers.get('Proxy-Authorization'),
                                 self.headers.get('Authorization')))
        if self._refused():
            return
        body = b'through the proxy'
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self):
        """A tunnel, as squid makes one for an https URL: the bytes are relayed, never read."""
        self.server.seen.append((self.client_address[1], 'CONNECT ' + self.path, self.headers.get('Proxy-Authorization'), None))
        if self._refused():
            return
        host, port = self.path.rsplit(':', 1)
        with socket.create_connection((host, int(port))) as upstream:
            self.send_response(200)
            self.end_headers()
            _relay(self.connection, upstream)
        self.close_connection = True

    def log_message(self, *args):
        pass


def _relay(one, other):
    while True:
        readable, _w, _x = select.select([one, other], [], [], 5)
        if not readable:
            return
        for source in readable:
            data = source.recv(1 << 16)
            if not data:
                return
            (other if source is one else one).sendall(data)


class _Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get('Proxy-Authorization'), self.headers.get('Authorization')))
        self.send_response(200)
        self.send_header('Content-Length', '2')
        self.end_headers()
        self.wfile.write(b'ok')

    def log_message(self, *args):
        pass


def _serving(server):
    """Serve on a thread until the test is done; ``server.seen`` records the requests."""
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def tls_origin(tmp_path_factory):
    files = ensure_tls(tmp_path_factory.mktemp('tls'))
    server = _Recording(('127.0.0.1', 0), _Origin)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(files.cert), str(files.key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.ca = files.ca
    yield from _serving(server)


@pytest.fixture
def recording_proxy():
    yield from _serving(_Recording(('127.0.0.1', 0), _Handler))


def test_every_request_on_a_kept_alive_connection_names_the_whole_url(recording_proxy, environment):
    environment.setenv('http_proxy', 'http://127.0.0.1:9')  # dead: the option must win
    port = recording_proxy.server_address[1]
    client = HttpClient(retries=0, proxy='http://fleet:pr0xy%20pass@127.0.0.1:' + str(port),
                        auth_url='http://origin.example:8080/', auth_headers={'Authorization': basic('modelseed', 'bundle')})
    for name in ('manifest.json', 'SHA256SUMS'):
        with client.open('http://origin.example:8080/bundle/' + name) as resp:
            assert resp.read() == b'through the proxy'
    client.close()
    seen = recording_proxy.seen
    assert [path for _port, path, _proxy_auth, _auth in seen] == [
        'http://origin.example:8080/bundle/manifest.json', 'http://origin.example:8080/bundle/SHA256SUMS']
    assert seen[0][0] == seen[1][0]  # one connection, kept alive
    assert {(proxy_auth, auth) for _port, _path, proxy_auth, auth in seen} == {(basic('fleet', 'pr0xy pass'), basic('modelseed', 'bundle'))}


def test_an_https_url_goes_through_one_tunnel_and_the_proxy_credentials_stay_with_the_proxy(recording_proxy, tls_origin, environment):
    proxy_port, origin = recording_proxy.server_address[1], 'https://127.0.0.1:%d/' % tls_origin.server_address[1]
    client = HttpClient(retries=0, ca_path=str(tls_origin.ca), proxy='http://fleet:pr0xy%20pass@127.0.0.1:' + str(proxy_port),
                        auth_url=origin, auth_headers={'Authorization': basic('modelseed', 'bundle')})
    for name in ('manifest.json', 'SHA256SUMS'):
        with client.open(origin + 'bundle/' + name) as resp:
            assert resp.read() == b'ok'
    client.close()
    assert [(line, proxy_auth) for _port, line, proxy_auth, _auth in recording_proxy.seen] == [
        ('CONNECT 127.0.0.1:%d' % tls_origin.server_address[1], basic('fleet', 'pr0xy pass'))]
    # Inside the tunnel: paths as to any server, the bundle's credentials, never the proxy's.
    assert tls_origin.seen == [('/bundle/manifest.json', None, basic('modelseed', 'bundle')),
                               ('/bundle/SHA256SUMS', None, basic('modelseed', 'bundle'))]


def test_an_unreachable_proxy_is_named_without_its_password(environment):
    with socket.socket() as placeholder:  # a port nothing listens on
        placeholder.bind(('127.0.0.1', 0))
        port = placeholder.getsockname()[1]
    client = HttpClient(retries=0, proxy='http://fleet:pr0xy%20pass@127.0.0.1:' + str(port))
    with pytest.raises(HttpError) as caught:
        client.open('http://origin.example:8080/bundle/manifest.json')
    assert str(caught.value).startswith('cannot reach origin.example:8080 through the proxy http://127.0.0.1:%d: ' % port)
    assert 'pr0xy' not in str(caught.value)


@pytest.mark.parametrize('scheme', ['http', 'https'])
def test_a_proxy_that_wants_other_credentials_fails_at_once(recording_proxy, tls_origin, environment, scheme):
    recording_proxy.required = basic('fleet', 'the right one')
    origin = 'https://127.0.0.1:%d/' % tls_origin.server_address[1] if scheme == 'https' else 'http://origin.example:8080/'
    client = HttpClient(retries=3, backoff=0, ca_path=str(tls_origin.ca),
                        proxy='http://fleet:wrong@127.0.0.1:' + str(recording_proxy.server_address[1]))
    with pytest.raises(HttpError) as caught:
        client.with_retries(lambda: client.open(origin + 'bundle/manifest.json'))
    expected = 'HTTP 407 from the proxy http://127.0.0.1:%d: it wants other credentials (http://user:password@host:port)' % (
        recording_proxy.server_address[1])
    assert (caught.value.status, str(caught.value)) == (407, expected)
    assert len(recording_proxy.seen) == 1  # no retry
