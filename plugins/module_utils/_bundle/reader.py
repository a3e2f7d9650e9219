# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a bundle (see format.py) from a directory or an http(s) URL, and stream its tars.

The tars are streamed by tar_reader.py.
"""

import hashlib
import os
from urllib.parse import quote

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.signature import MAX_SIGNATURE_BYTES, SIGNATURE
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tar_reader import BUFFER, extract_tar
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpError, ResumableGet

MAX_SUMS_BYTES = 1024 * 1024


# -- sources -------------------------------------------------------------------


class DirSource:
    """A bundle directory on this host."""

    def __init__(self, path):
        self.path = path

    def location(self, name):
        return os.path.join(self.path, name)

    def read_small(self, name, limit):
        data = self.read_optional(name, limit)
        if data is None:
            raise BundleError('%s is missing from the bundle in %s' % (name, self.path))
        return data

    def read_optional(self, name, limit):
        """Up to ``limit + 1`` bytes of ``name``, or None when the bundle has no such file."""
        try:
            with open(os.path.join(self.path, name), 'rb') as handle:
                return handle.read(limit + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BundleError('cannot read %s: %s' % (self.location(name), exc.strerror or exc))

    def open_stream(self, name, size):
        path = os.path.join(self.path, name)
        try:
            handle = open(path, 'rb', buffering=0)
        except FileNotFoundError:
            raise BundleError('%s is missing from the bundle in %s' % (name, self.path))
        except OSError as exc:
            raise BundleError('cannot read %s: %s' % (path, exc.strerror or exc))
        actual = os.fstat(handle.fileno()).st_size
        if actual != size:
            handle.close()
            raise BundleError('%s is %d bytes, the manifest says %d' % (path, actual, size))
        return handle

    def close(self):
        pass


class UrlSource:
    """A bundle published under an http(s) URL: ``<url>/manifest.json``, ``<url>/SHA256SUMS``, ``<url>/<tar>``."""

    def __init__(self, url, client):
        self.base = url.rstrip('/')
        self.client = client

    def location(self, name):
        return '%s/%s' % (self.base, quote(name))

    def read_small(self, name, limit):
        data = self.read_optional(name, limit)
        if data is None:
            raise BundleError('%s is missing from the bundle at %s (HTTP 404)' % (name, self.base))
        return data

    def read_optional(self, name, limit):
        """Up to ``limit + 1`` bytes of ``name``, or None when the server answers 404."""
        url = self.location(name)

        def fetch():
            with self.client.open(url) as resp:
                data = bytearray()
                while len(data) <= limit:
                    chunk = resp.read(min(1 << 20, limit + 1 - len(data)))
                    if not chunk:
                        break
                    data += chunk
                return bytes(data)

        try:
            return self.client.with_retries(fetch)
        except HttpError as exc:
            if exc.status == 404:
                return None
            raise

    def open_stream(self, name, size):
        return HttpStream(self.client, self.location(name), size)

    def close(self):
        self.client.close()


class HttpStream(ResumableGet):
    """A tar of the bundle over HTTP as a raw stream with ``readinto``; a broken connection resumes where it
    broke, and a server that ignores Range has the bytes delivered already skipped (see ResumableGet).

    ``size`` is the manifest's: the tar reader reads no more than that and judges a tar of another size
    itself, so the stream does not treat a short one as a broken connection.
    """

    def __init__(self, client, url, size):
        super().__init__(client, url)
        self.size = size


# -- the bundle ------------------------------------------------------------------


class Bundle:
    """manifest.json checked against SHA256SUMS, and each model's tar name and hash cross-checked.

    With ``trust`` (a signature.Trust), the signature of manifest.json is verified before anything else of the
    bundle is believed (see read_manifest); ``signer`` is who signed it, or None without a trust list.
    """

    # What an install does with the model files: they are written from the tars (tree_reader.TreeBundle
    # may move or link them instead, and then needs no room for them).
    form = 'tar'
    verb = 'extracted'
    copies = True

    def __init__(self, source, sums=None, trust=None):
        self.source = source
        sums = read_sums(source) if sums is None else sums
        self.manifest, self.manifest_sha256, self.signer = read_manifest(source, sums, trust)
        self.models = self.manifest['models']
        for model in self.models:
            label = bundle_format.model_label(model)
            if sums.get(model['tar']) != model['tar_sha256']:
                raise BundleError('%s: %s says %s has sha256 %s, the manifest says %s' % (
                    label, bundle_format.SUMS, model['tar'], sums.get(model['tar'], '(nothing)'), model['tar_sha256']))

    def prepare(self, model, staging_parent):
        """Nothing to check before a tar is streamed: it is judged as it is read."""

    def extract(self, model, sink, buffer_size=BUFFER):
        """Stream ``model``'s tar into ``sink``; returns {path: stat of the file written}."""
        try:
            raw = self.source.open_stream(model['tar'], model['tar_size'])
        except BundleError as exc:
            raise BundleError('%s: %s' % (bundle_format.model_label(model), exc))
        try:
            return extract_tar(raw, model, sink, buffer_size=buffer_size)
        finally:
            raw.close()


def read_sums(source):
    """SHA256SUMS of the bundle as {file name: sha256}."""
    return bundle_format.parse_sums(_limited(source.read_small(bundle_format.SUMS, MAX_SUMS_BYTES), MAX_SUMS_BYTES, bundle_format.SUMS))


def read_manifest(source, sums, trust=None):
    """(manifest, its sha256, signer): manifest.json checked against ``sums`` and parsed.

    The manifest is read once: with ``trust`` (a signature.Trust) its signature is verified over exactly the bytes
    that are then compared and parsed, before either; ``signer`` is None without ``trust``.
    """
    data = _limited(source.read_small(bundle_format.MANIFEST, bundle_format.MAX_MANIFEST_BYTES),
                    bundle_format.MAX_MANIFEST_BYTES, bundle_format.MANIFEST)
    signer = None
    if trust is not None:
        signature = source.read_optional(SIGNATURE, MAX_SIGNATURE_BYTES)
        if signature is not None:
            _limited(signature, MAX_SIGNATURE_BYTES, SIGNATURE)
        signer = trust.verify(data, signature)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sums[bundle_format.MANIFEST]:
        raise BundleError('%s has sha256 %s, but %s says %s: the bundle is corrupt or was changed' % (
            source.location(bundle_format.MANIFEST), digest, bundle_format.SUMS, sums[bundle_format.MANIFEST]))
    return bundle_format.parse_manifest(data), digest, signer


def _limited(data, limit, name):
    if len(data) > limit:
        raise BundleError('%s is larger than %d bytes' % (name, limit))
    return data
