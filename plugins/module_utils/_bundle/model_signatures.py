# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-model signatures in the OpenSSF model-signing format (the ``model-signing`` package), made from a bundle's manifest.

A model's signature is ``<owner>--<name>--<revision>.sig`` in the bundle directory, beside its tar or model directory,
and ``<model directory>.sig`` beside the installed model in a cache, never inside it: the model's files stay as
they are. ``model_signing verify key --public_key KEY.pub --signature <dir>.sig <dir>`` checks an installed model.

What a signature covers is the model's own files, by path and sha256, exactly as ``manifest.json`` names them
(cache_install checks every installed byte against them), so signing needs only the manifest, never the model's
bytes. Left out, and recorded in the signature as paths the verifier ignores: the SDK's ``.msc``/``.mdl``/``.mv``,
which each cache layout writes afresh on the node. Left out because model-signing's verifier always ignores them:
``.git``, ``.gitattributes``, ``.github`` and ``.gitignore``.

Only the signing side needs ``model-signing`` (key-based, offline): the nodes only carry the signature files.
"""

import json
import os
import pathlib
import stat
import tempfile

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import tree_dir_name
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_paths import SIGNATURE_SUFFIX, signature_beside
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, lstat_or_none, unlink

PACKAGE = 'model-signing'
# Rewritten per cache layout on the node: not the model's content.
SDK_METADATA = ('.msc', '.mdl', '.mv')
# model-signing's verifier leaves these out of every model it hashes.
GIT_PATHS = ('.git', '.gitattributes', '.github', '.gitignore')
MAX_MODEL_SIGNATURE_BYTES = 64 * 1024 * 1024


class ModelSigningError(ModelseedError):
    """A model signature cannot be made or read."""


class _Lib:
    """The parts of model-signing used here, imported on first use: the import takes most of a second of CPU, which
    nothing that does not sign models (cache_install, bundle_sign without model_signing_key) should pay."""

    loaded = None

    @classmethod
    def get(cls):
        if cls.loaded is None:
            from cryptography.hazmat.primitives import serialization
            from model_signing import manifest
            from model_signing._hashing.hashing import Digest
            from model_signing._signing import sign_ec_key, sign_sigstore_pb, signing
            cls.loaded = dict(serialization=serialization, manifest=manifest, Digest=Digest, sign_ec_key=sign_ec_key,
                              sign_sigstore_pb=sign_sigstore_pb, signing=signing)
        return cls.loaded


def available():
    """True when the model-signing package can be imported here."""
    try:
        _Lib.get()
    except ImportError:
        return False
    return True


def signature_name(model):
    """The file name of a manifest model's signature in the bundle directory."""
    return tree_dir_name(model) + SIGNATURE_SUFFIX


def covered_files(model):
    """[(path, sha256)] of the model's files a signature covers: all but the git paths the verifier ignores."""
    return [(f['path'], f['sha256']) for f in model['files'] if f['path'].split('/', 1)[0] not in GIT_PATHS]


class ModelSigner:
    """An elliptic-curve private key (PEM, no passphrase) that signs models of a manifest."""

    def __init__(self, key_path):
        if not available():
            raise ModelSigningError('writing model signatures needs the Python package %s (pip install %s) on the host '
                                    'that signs; it is not importable here' % (PACKAGE, PACKAGE))
        lib = self.lib = _Lib.get()
        serialization = lib['serialization']
        try:
            self._signer = lib['sign_ec_key'].Signer(pathlib.Path(key_path))
            with open(key_path, 'rb') as handle:
                public = serialization.load_pem_private_key(handle.read(), None).public_key()
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # AttributeError: a key without a curve (RSA)
            raise ModelSigningError('model signing key %s is not an elliptic-curve private key (PEM, without a passphrase) '
                                    'that %s accepts: %s' % (key_path, PACKAGE, exc))
        self.public_pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, model):
        """The signature (bytes, the JSON model-signing writes) of a manifest model entry."""
        signature = self._signer.sign(self.lib['signing'].Payload(expected_manifest(model)))
        return signature.bundle.to_json().encode('utf-8')

    def signed(self, model, path):
        """True when ``path`` holds a signature of this key over exactly what ``sign(model)`` would cover."""
        if not os.path.isfile(path) or os.path.getsize(path) > MAX_MODEL_SIGNATURE_BYTES:
            return False
        with tempfile.NamedTemporaryFile(prefix='modelseed-public-', suffix='.pem') as public:
            public.write(self.public_pem)
            public.flush()
            verifier = self.lib['sign_ec_key'].Verifier(pathlib.Path(public.name))
            try:
                found = verifier.verify(self.lib['sign_sigstore_pb'].Signature.read(pathlib.Path(path)))
            except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                return False
        wanted = expected_manifest(model)
        return found == wanted and found.serialization_type == wanted.serialization_type


def expected_manifest(model):
    """The model-signing manifest of a manifest model entry: its covered files' sha256, the SDK metadata ignored."""
    lib = _Lib.get()
    serialization_type = lib['manifest'].SerializationType.from_args(
        {'method': 'files', 'hash_type': 'sha256', 'allow_symlinks': False, 'ignore_paths': list(SDK_METADATA)})
    items = [serialization_type.new_item(path, lib['Digest']('sha256', bytes.fromhex(sha))) for path, sha in covered_files(model)]
    return lib['manifest'].Manifest(model['id'].split('/', 1)[1], items, serialization_type)


# -- on the node: the signature travels with the bundle and lands beside the installed model ---------------------


def read_from_bundle(source, model):
    """The bytes of ``model``'s signature in a bundle source (reader.DirSource or UrlSource), or None when it has none."""
    name = signature_name(model)
    data = source.read_optional(name, MAX_MODEL_SIGNATURE_BYTES)
    if data is not None and len(data) > MAX_MODEL_SIGNATURE_BYTES:
        raise ModelSigningError('%s is larger than %d bytes' % (name, MAX_MODEL_SIGNATURE_BYTES))
    return data


def stale_beside(model_dir, data, perms):
    """Why the signature beside an installed model is not ``data`` (the bundle's) with the model's owner and mode, or
    None when it is. A bundle without one (``data`` None) leaves whatever is there: the files it vouches for did not change."""
    if data is None:
        return None
    path = signature_beside(model_dir)
    st = lstat_or_none(path)
    if st is None:
        return 'model-signing signature missing'
    if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
        return 'model-signing signature differs from the bundle\'s'
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0))
    with os.fdopen(fd, 'rb') as handle:
        if handle.read(len(data) + 1) != data:
            return 'model-signing signature differs from the bundle\'s'
    if not perms.ok(st, perms.file):
        return 'ownership or mode of the model-signing signature differs'
    return None


def place_beside(model_dir, data, perms, sync=True):
    """Put ``data`` beside the installed model, or remove a signature there when the bundle carries none for it:
    a signature of the files replaced no longer holds."""
    path = signature_beside(model_dir)
    if data is None:
        unlink(path)
        return
    atomic_write(path, data, perms.file, sync=sync, prepare=lambda fd: perms.apply_fd(fd, perms.file))
