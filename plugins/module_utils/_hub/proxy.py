# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which HTTP proxy a request goes through: the one a task names, none, or the environment's."""

import base64
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies, proxy_bypass


class Proxy:
    """An HTTP proxy: where to connect, and the Proxy-Authorization its URL's credentials make.

    ``name`` is the proxy without its credentials, for messages.
    """

    def __init__(self, url, strict=True):
        parts = urlsplit(url if '://' in url else 'http://' + url)
        # http.client speaks plain HTTP to a proxy (https URLs go through it with CONNECT).
        if strict and (parts.scheme.lower() != 'http' or not parts.hostname or parts.path not in ('', '/')):
            raise ValueError('a proxy is http://[user:password@]host:port, got %s' % _without_credentials(parts))
        self.host = parts.hostname
        self.port = parts.port or 80
        self.name = 'http://%s:%d' % ('[%s]' % self.host if ':' in self.host else self.host, self.port)
        self.headers = {}
        if parts.username is not None:
            token = '%s:%s' % (unquote(parts.username), unquote(parts.password or ''))
            self.headers['Proxy-Authorization'] = 'Basic ' + base64.b64encode(token.encode('utf-8')).decode('ascii')


def _without_credentials(parts):
    return '%s://%s%s' % (parts.scheme, parts.netloc.rpartition('@')[2], parts.path)


class ProxyChoice:
    """The proxy of each origin.

    ``setting`` None: the environment's (http_proxy, https_proxy, no_proxy and their upper-case forms);
    '' : none, whatever the environment says; a URL: that proxy for every origin, no_proxy ignored.
    """

    def __init__(self, setting=None):
        self._fixed = Proxy(setting) if setting else None
        self._environment = getproxies() if setting is None else {}

    def for_origin(self, scheme, host):
        if self._fixed is not None:
            return self._fixed
        url = self._environment.get(scheme)
        if not url or proxy_bypass(host):
            return None
        return Proxy(url, strict=False)  # taken as it always was: host and port, whatever the scheme says
