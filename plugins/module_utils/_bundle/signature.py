# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verify the signature of a bundle's manifest.json against a trust list, with the tools a node already has.

The signature is ``manifest.json.sig`` beside the manifest. It covers manifest.json, which names the sha256 of
every file (and every tar) of the bundle, so a verified manifest vouches for everything installed from it.

- ``ssh``: an OpenSSH signature (``ssh-keygen -Y sign``), verified with ``ssh-keygen -Y verify`` against an
  ``allowed_signers`` file, for one of the accepted identities (principals) and the namespace. OpenSSH 8.1 or newer.
- ``gpg``: a detached OpenPGP signature, verified with ``gpgv`` against a keyring; the namespace is the signature
  notation ``namespace@modelseed.fleet``, and ``identities`` (when given) are the primary key fingerprints accepted.

The verifier gets the manifest's bytes and the signature's bytes, never paths into the bundle: the bytes verified
are the bytes the installer then parses.
"""

import base64
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError

SIGNATURE = 'manifest.json.sig'
MAX_SIGNATURE_BYTES = 64 * 1024
DEFAULT_NAMESPACE = 'modelseed-bundle'
GPG_NOTATION = 'namespace@modelseed.fleet'
METHODS = ('ssh', 'gpg')
TOOL_TIMEOUT = 120
# Where the tools live when the module's PATH is minimal.
_SYSTEM_PATH = '/usr/local/bin:/usr/bin:/bin'
_NO_MATCH = '%s does not match manifest.json: the manifest was changed after it was signed, or the signature is damaged' % SIGNATURE


class SignatureError(BundleError):
    """The bundle is refused: unsigned, badly signed, or signed by someone the trust list does not name."""


def find_tool(name):
    found = shutil.which(name) or shutil.which(name, path=_SYSTEM_PATH)
    if not found:
        raise SignatureError('%s is not installed on this host, and verifying the bundle signature needs it' % name)
    return found


def run_tool(argv, data, env=None):
    """(returncode, stdout, stderr) of ``argv`` fed ``data`` on stdin; text decoded leniently."""
    try:
        proc = subprocess.run(argv, input=data, capture_output=True, timeout=TOOL_TIMEOUT,
                              env=env, check=False)
    except subprocess.TimeoutExpired:
        raise SignatureError('%s took more than %d s' % (os.path.basename(argv[0]), TOOL_TIMEOUT))
    return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')


class Trust:
    """The trust list: who may sign bundles, and for which namespace."""

    def __init__(self, method='ssh', allowed_signers=None, identities=None, namespace=DEFAULT_NAMESPACE, keyring=None):
        if method not in METHODS:
            raise SignatureError('trust method %r is not one of %s' % (method, ', '.join(METHODS)))
        self.method = method
        self.allowed_signers = allowed_signers
        self.identities = list(identities or [])
        self.namespace = namespace or DEFAULT_NAMESPACE
        self.keyring = keyring
        if method == 'ssh' and not (allowed_signers and self.identities):
            raise SignatureError('trust with method ssh needs allowed_signers (a file) and identities (the principals to accept)')
        if method == 'gpg' and not keyring:
            raise SignatureError('trust with method gpg needs keyring (a keyring file for gpgv)')
        for path in (allowed_signers, keyring):
            if path and not os.path.isfile(path):
                raise SignatureError('trust list %s is not a file on this host' % path)

    def verify(self, manifest, signature):
        """The identity that signed ``manifest`` (bytes) with ``signature`` (bytes, or None when the bundle has none)."""
        if signature is None:
            raise SignatureError('the bundle is not signed (it has no %s), and this host trusts only signed bundles' % SIGNATURE)
        scratch = tempfile.mkdtemp(prefix='modelseed-signature-')
        try:
            sig_path = os.path.join(scratch, SIGNATURE)
            with open(sig_path, 'wb') as handle:
                handle.write(signature)
            if self.method == 'ssh':
                return self._verify_ssh(manifest, signature, sig_path)
            return self._verify_gpg(manifest, sig_path, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _verify_ssh(self, manifest, signature, sig_path):
        facts = ssh_signature_facts(signature)
        if facts['namespace'] != self.namespace:
            raise SignatureError('%s was made for namespace %r, and this host accepts only %r' % (
                SIGNATURE, facts['namespace'], self.namespace))
        keygen = find_tool('ssh-keygen')
        for identity in self.identities:
            code, out, err = run_tool([keygen, '-Y', 'verify', '-f', self.allowed_signers, '-I', identity, '-n', self.namespace,
                                       '-s', sig_path], manifest)
            if code == 0:
                return '%s (%s key %s)' % (identity, facts['key_type'], facts['fingerprint'])
            if 'unknown option' in err or 'usage:' in err.lower():
                raise SignatureError('ssh-keygen on this host cannot verify signatures (-Y verify): OpenSSH 8.1 or newer is needed%s' % (
                    openssh_version_note()))
            if 'incorrect signature' in err:
                raise SignatureError(_NO_MATCH)
        # ssh-keygen says no more than "Could not verify signature." when the key is not listed for an identity.
        raise SignatureError('%s was made by %s key %s, which %s does not list for %s' % (
            SIGNATURE, facts['key_type'], facts['fingerprint'], self.allowed_signers, ' or '.join(self.identities)))

    def _verify_gpg(self, manifest, sig_path, scratch):
        gpgv = find_tool('gpgv')
        # gpgv keeps no state, but looks for a home directory: give it an empty one of its own.
        env = dict(os.environ, GNUPGHOME=scratch, LC_ALL='C')
        code, out, err = run_tool([gpgv, '--keyring', os.path.abspath(self.keyring), '--status-fd', '1', sig_path, '-'],
                                  manifest, env)
        status = parse_gpg_status(out)
        if 'BADSIG' in status:
            raise SignatureError(_NO_MATCH)
        if 'NO_PUBKEY' in status:
            raise SignatureError('%s was made by OpenPGP key %s, which keyring %s does not hold' % (
                SIGNATURE, status['NO_PUBKEY'][0], self.keyring))
        if code != 0 or 'VALIDSIG' not in status:
            lines = [line for line in err.splitlines() if line.strip()]
            raise SignatureError('gpgv could not verify %s against %s: %s' % (SIGNATURE, self.keyring, lines[-1] if lines else 'exit %d' % code))
        primary = status['VALIDSIG'][-1]
        notations = status.get('NOTATIONS', {})
        if GPG_NOTATION not in notations:
            raise SignatureError('%s carries no namespace (the notation %s), and this host accepts only signatures made for %r' % (
                SIGNATURE, GPG_NOTATION, self.namespace))
        if notations[GPG_NOTATION] != self.namespace:
            raise SignatureError('%s was made for namespace %r (notation %s), and this host accepts only %r' % (
                SIGNATURE, notations[GPG_NOTATION], GPG_NOTATION, self.namespace))
        accepted = [fpr.replace(' ', '').upper() for fpr in self.identities]
        if accepted and primary.upper() not in accepted:
            raise SignatureError('%s was made by OpenPGP key %s, which is not among the accepted identities %s' % (
                SIGNATURE, primary, ', '.join(self.identities)))
        who = ' '.join(status.get('GOODSIG', [])[1:])
        return '%s (OpenPGP key %s)' % (who, primary) if who else 'OpenPGP key %s' % primary


def parse_gpg_status(text):
    """{keyword: [arguments]} of gpgv's ``--status-fd`` lines, with the signature's notations as ``NOTATIONS``."""
    status, notations, name = {}, {}, None
    for line in text.splitlines():
        if not line.startswith('[GNUPG:] '):
            continue
        parts = line[len('[GNUPG:] '):].split(' ')
        keyword, args = parts[0], parts[1:]
        if keyword == 'NOTATION_NAME':
            name = ' '.join(args)
        elif keyword == 'NOTATION_DATA' and name is not None:
            notations[name] = notations.get(name, '') + ' '.join(args)
        else:
            status[keyword] = args
    status['NOTATIONS'] = notations
    return status


def ssh_signature_facts(signature):
    """{namespace, key_type, fingerprint} read from an armored SSHSIG (for messages: ssh-keygen does the verifying)."""
    try:
        text = signature.decode('ascii')
        lines = text.strip().splitlines()
        if lines[0] != '-----BEGIN SSH SIGNATURE-----' or lines[-1] != '-----END SSH SIGNATURE-----':
            raise ValueError('no SSH SIGNATURE armor')
        blob = base64.b64decode(''.join(lines[1:-1]), validate=True)
        if blob[:6] != b'SSHSIG':
            raise ValueError('no SSHSIG magic')
        pos = 10  # magic and version
        key, pos = _ssh_string(blob, pos)
        namespace, pos = _ssh_string(blob, pos)
        key_type = _ssh_string(key, 0)[0]
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
        raise SignatureError('%s is not an OpenSSH signature (%s)' % (SIGNATURE, exc))
    fingerprint = 'SHA256:' + base64.b64encode(hashlib.sha256(key).digest()).decode('ascii').rstrip('=')
    return {'namespace': namespace.decode('utf-8', 'replace'), 'key_type': key_type.decode('ascii', 'replace'), 'fingerprint': fingerprint}


def _ssh_string(data, pos):
    (length,) = struct.unpack('>I', data[pos:pos + 4])
    if pos + 4 + length > len(data):
        raise ValueError('truncated')
    return data[pos + 4:pos + 4 + length], pos + 4 + length


def openssh_version_note():
    """`` (this host has OpenSSH_8.0p1)``, from ``ssh -V``, or nothing."""
    ssh = shutil.which('ssh') or shutil.which('ssh', path=_SYSTEM_PATH)
    if not ssh:
        return ''
    try:
        code, out, err = run_tool([ssh, '-V'], b'')
    except (OSError, SignatureError):
        return ''
    version = (err or out).strip().split(',')[0]
    return ' (this host has %s)' % version if version else ''
