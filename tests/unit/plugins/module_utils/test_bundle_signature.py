"""signature and signer: manifests signed and verified with the real ssh-keygen, gpg and gpgv; every refusal says why."""

import base64
import os
import shutil

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.reader import Bundle, DirSource
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.signature import SIGNATURE, SignatureError, Trust
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.signer import Signer
from support.bundles import ModelSpec, write_bundle
from support.signing import GpgKey, allowed_signers, ssh_key, ssh_sign

pytestmark = pytest.mark.skipif(not (shutil.which('ssh-keygen') and shutil.which('gpg') and shutil.which('gpgv')),
                                reason='needs ssh-keygen (openssh-client), gpg and gpgv')

MANIFEST = b'{"format": "modelseed.fleet/bundle"}\n'
RELEASE = 'release@example.com'


@pytest.fixture(scope='module')
def keys(tmp_path_factory):
    base = tmp_path_factory.mktemp('keys')
    release, stranger = ssh_key(base / 'release'), ssh_key(base / 'stranger')
    allowed = allowed_signers(base / 'allowed_signers', {RELEASE: release, 'ops@example.com': stranger})
    gpg = GpgKey.create(base / 'gnupg', 'Release <%s>' % RELEASE)
    other_gpg = GpgKey.create(base / 'gnupg-other', 'Other <other@example.com>')
    try:
        yield dict(release=release, stranger=stranger, allowed=str(allowed), gpg=gpg, other_gpg=other_gpg,
                   keyring=str(gpg.export(base / 'keyring.gpg')))
    finally:
        gpg.close()
        other_gpg.close()


def ssh_trust(keys, **kwargs):
    return Trust('ssh', allowed_signers=keys['allowed'], identities=kwargs.pop('identities', [RELEASE]), **kwargs)


def test_ssh_signature_of_a_listed_signer_is_verified(keys):
    signer = ssh_trust(keys).verify(MANIFEST, ssh_sign(keys['release'], MANIFEST))
    assert signer.startswith('release@example.com (ssh-ed25519 key SHA256:')


# Each way a bundle can fail the trust list, and the words that say which one it was.
SSH_REFUSALS = {
    'unsigned': (lambda k: (MANIFEST, None), 'the bundle is not signed (it has no manifest.json.sig)'),
    'not a signature': (lambda k: (MANIFEST, b'hello\n'), 'manifest.json.sig is not an OpenSSH signature'),
    'damaged signature': (lambda k: (MANIFEST, damaged(ssh_sign(k['release'], MANIFEST))), 'does not match manifest.json'),
    'signer not on the list': (lambda k: (MANIFEST, ssh_sign(k['stranger'], MANIFEST)),
                               'which %s does not list for release@example.com'),
    'another namespace': (lambda k: (MANIFEST, ssh_sign(k['release'], MANIFEST, 'git')),
                          "was made for namespace 'git', and this host accepts only 'modelseed-bundle'"),
    'manifest changed after signing': (lambda k: (MANIFEST.replace(b'}', b', "x": 1}'), ssh_sign(k['release'], MANIFEST)),
                                       'the manifest was changed after it was signed'),
}


def damaged(signature):
    """The armored signature with one bit of the signature value (near its end) flipped."""
    lines = signature.decode().splitlines()
    body = bytearray(base64.b64decode(''.join(lines[1:-1])))
    body[-5] ^= 1
    text = base64.b64encode(bytes(body)).decode()
    return ('\n'.join([lines[0]] + [text[i:i + 70] for i in range(0, len(text), 70)] + [lines[-1]]) + '\n').encode()


@pytest.mark.parametrize('case', sorted(SSH_REFUSALS))
def test_ssh_refusals_say_why(keys, case):
    make, words = SSH_REFUSALS[case]
    manifest, signature = make(keys)
    with pytest.raises(SignatureError) as caught:
        ssh_trust(keys).verify(manifest, signature)
    assert (words % keys['allowed'] if '%s' in words else words) in str(caught.value)


def test_ssh_namespace_restriction_of_allowed_signers_is_honoured(keys, tmp_path):
    """allowed_signers may limit a signer to other namespaces: ssh-keygen decides, and the bundle is refused."""
    limited = allowed_signers(tmp_path / 'allowed', {RELEASE: keys['release']}, namespaces='git')
    trust = Trust('ssh', allowed_signers=str(limited), identities=[RELEASE])
    with pytest.raises(SignatureError, match='does not list for release@example.com'):
        trust.verify(MANIFEST, ssh_sign(keys['release'], MANIFEST))


def test_the_second_identity_of_the_list_is_tried(keys):
    signer = ssh_trust(keys, identities=['nobody@example.com', 'ops@example.com']).verify(MANIFEST, ssh_sign(keys['stranger'], MANIFEST))
    assert signer.startswith('ops@example.com ')


def test_an_openssh_without_signatures_is_named(keys, tmp_path, monkeypatch):
    """ssh-keygen before 8.1 answers -Y with its usage: the error says which version is needed."""
    signature = ssh_sign(keys['release'], MANIFEST)
    old = tmp_path / 'bin'
    old.mkdir()
    (old / 'ssh-keygen').write_text('#!/bin/sh\necho "ssh-keygen: unknown option -- Y" >&2\necho "usage: ssh-keygen [-q] ..." >&2\nexit 1\n')
    (old / 'ssh-keygen').chmod(0o755)
    monkeypatch.setenv('PATH', '%s:%s' % (old, os.environ['PATH']))
    with pytest.raises(SignatureError, match=r'OpenSSH 8\.1 or newer is needed \(this host has OpenSSH_'):
        ssh_trust(keys).verify(MANIFEST, signature)


@pytest.mark.parametrize('kwargs, words', [
    (dict(method='ssh', identities=[RELEASE]), 'needs allowed_signers'),
    (dict(method='ssh', allowed_signers='/nonexistent/allowed', identities=[RELEASE]), '/nonexistent/allowed is not a file'),
    (dict(method='gpg'), 'needs keyring'),
    (dict(method='x509'), "trust method 'x509' is not one of ssh, gpg"),
])
def test_an_incomplete_trust_list_is_refused(kwargs, words):
    with pytest.raises(SignatureError, match=words):
        Trust(**kwargs)


def test_gpg_signature_is_verified_with_gpgv(keys):
    trust = Trust('gpg', keyring=keys['keyring'], identities=[keys['gpg'].fingerprint])
    assert trust.verify(MANIFEST, keys['gpg'].sign(MANIFEST)) == 'Release <release@example.com> (OpenPGP key %s)' % keys['gpg'].fingerprint


@pytest.mark.parametrize('case, words', [
    ('changed', 'the manifest was changed after it was signed'),
    ('not in keyring', 'which keyring'),
    ('another namespace', "made for namespace 'git'"),
    ('no namespace', 'carries no namespace'),
    ('fingerprint not accepted', 'is not among the accepted identities'),
])
def test_gpg_refusals_say_why(keys, case, words):
    gpg, manifest, identities = keys['gpg'], MANIFEST, []
    signature = gpg.sign(MANIFEST)
    if case == 'changed':
        manifest = MANIFEST + b' '
    elif case == 'not in keyring':
        signature = keys['other_gpg'].sign(MANIFEST)
    elif case == 'another namespace':
        signature = gpg.sign(MANIFEST, 'git')
    elif case == 'no namespace':
        signature = gpg.sign(MANIFEST, None)
    else:
        identities = [keys['other_gpg'].fingerprint]
    with pytest.raises(SignatureError, match=words):
        Trust('gpg', keyring=keys['keyring'], identities=identities).verify(manifest, signature)


@pytest.mark.parametrize('method', ['ssh', 'gpg'])
def test_signer_signs_once_and_knows_its_own_signature(keys, method):
    key = str(keys['release']) if method == 'ssh' else keys['gpg'].fingerprint
    signer = Signer(method, key, 'modelseed-bundle', str(keys['gpg'].home) if method == 'gpg' else None)
    signature = signer.sign(MANIFEST)
    assert signer.signed(MANIFEST, signature)
    assert not signer.signed(MANIFEST + b' ', signature)
    assert not signer.signed(MANIFEST, None)
    assert not Signer(method, key, 'other', signer.gpg_homedir).signed(MANIFEST, signature)
    trust = ssh_trust(keys) if method == 'ssh' else Trust('gpg', keyring=keys['keyring'])
    assert 'release@example.com' in trust.verify(MANIFEST, signature)


def test_signer_failure_names_the_key_not_its_contents(keys, tmp_path):
    broken = tmp_path / 'broken'
    broken.write_text('not a key\n')
    with pytest.raises(SignatureError, match='signing with ssh %s failed' % broken):
        Signer('ssh', str(broken), 'modelseed-bundle').sign(MANIFEST)


class ChangingSource(DirSource):
    """A bundle directory whose manifest.json is swapped for another one after it was first read."""

    def __init__(self, path, later):
        DirSource.__init__(self, path)
        self.later = later
        self.reads = 0

    def read_optional(self, name, limit):
        data = DirSource.read_optional(self, name, limit)
        if name == bundle_format.MANIFEST:
            self.reads += 1
            if self.reads > 1:
                return self.later
        return data


def test_the_bundle_uses_the_manifest_bytes_it_verified(keys, tmp_path):
    first = write_bundle(tmp_path / 'first', [ModelSpec('o/m', {'config.json': b'{}'})])
    other = write_bundle(tmp_path / 'other', [ModelSpec('o/m', {'config.json': b'{"evil": 1}'})])
    manifest = (first / bundle_format.MANIFEST).read_bytes()
    (first / SIGNATURE).write_bytes(ssh_sign(keys['release'], manifest))
    source = ChangingSource(str(first), (other / bundle_format.MANIFEST).read_bytes())
    bundle = Bundle(source, trust=ssh_trust(keys))
    assert source.reads == 1
    assert bundle.signer.startswith(RELEASE)
    assert bundle.manifest == bundle_format.parse_manifest(manifest)


def test_without_trust_the_signature_is_not_read(tmp_path):
    bundle_dir = write_bundle(tmp_path / 'b', [ModelSpec('o/m', {'config.json': b'{}'})])
    (bundle_dir / SIGNATURE).write_bytes(b'garbage')
    assert Bundle(DirSource(str(bundle_dir))).signer is None
