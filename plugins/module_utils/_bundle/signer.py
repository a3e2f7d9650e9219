# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sign a bundle's manifest.json on the host that holds the key; the key is read only by the signing tool.

``ssh``: ``ssh-keygen -Y sign -f KEY -n NAMESPACE`` (KEY a private key without a passphrase, or a ``.pub`` whose
private key is in ssh-agent). ``gpg``: ``gpg --detach-sign`` with the namespace as the notation
``namespace@modelseed.fleet``. A signature already there that verifies with the same key and namespace is kept.
"""

import os
import shutil
import tempfile

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.signature import (
    GPG_NOTATION,
    SignatureError,
    Trust,
    find_tool,
    openssh_version_note,
    run_tool,
)

_SIGNER = 'modelseed-signer'


class Signer:
    """One key of one method, and the namespace it signs for."""

    def __init__(self, method, key, namespace, gpg_homedir=None):
        self.method = method
        self.key = key
        self.namespace = namespace
        self.gpg_homedir = gpg_homedir

    def sign(self, manifest):
        """The signature (bytes) of ``manifest`` (bytes)."""
        if self.method == 'ssh':
            code, out, err = run_tool([find_tool('ssh-keygen'), '-Y', 'sign', '-f', self.key, '-n', self.namespace, '-'], manifest)
            if code != 0 and ('unknown option' in err or 'usage:' in err.lower()):
                raise SignatureError('ssh-keygen on this host cannot sign (-Y sign): OpenSSH 8.1 or newer is needed%s' % openssh_version_note())
        else:
            code, out, err = run_tool(self._gpg() + ['--local-user', self.key, '--detach-sign', '--armor',
                                                     '--sig-notation', '%s=%s' % (GPG_NOTATION, self.namespace), '--output', '-', '-'],
                                      manifest)
        if code != 0 or not out:
            lines = [line for line in err.splitlines() if line.strip() and not line.startswith('Signing data')]
            raise SignatureError('signing with %s %s failed: %s' % (self.method, self.key, lines[-1] if lines else 'exit %d' % code))
        return out.encode('ascii')

    def signed(self, manifest, signature):
        """Whether ``signature`` (bytes or None) is this key's, for this namespace, over ``manifest``."""
        if not signature:
            return False
        scratch = tempfile.mkdtemp(prefix='modelseed-sign-')
        try:
            if self.method == 'ssh':
                allowed = os.path.join(scratch, 'allowed_signers')
                with open(allowed, 'w') as handle:
                    handle.write('%s %s\n' % (_SIGNER, ' '.join(self._ssh_public_key().split()[:2])))
                trust = Trust('ssh', allowed_signers=allowed, identities=[_SIGNER], namespace=self.namespace)
            else:
                keyring = os.path.join(scratch, 'keyring.gpg')
                code, out, err = run_tool(self._gpg() + ['--export', '--output', keyring, self.key], b'')
                if code != 0 or not os.path.isfile(keyring) or not os.path.getsize(keyring):
                    raise SignatureError('gpg has no key %s%s' % (self.key, ' in %s' % self.gpg_homedir if self.gpg_homedir else ''))
                trust = Trust('gpg', keyring=keyring, namespace=self.namespace)
            try:
                trust.verify(manifest, signature)
            except SignatureError:
                return False
            return True
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _ssh_public_key(self):
        for path in (self.key, self.key + '.pub'):
            if path.endswith('.pub') and os.path.isfile(path):
                with open(path) as handle:
                    return handle.read().strip()
        code, out, err = run_tool([find_tool('ssh-keygen'), '-y', '-f', self.key], b'')
        if code != 0:
            raise SignatureError('cannot read the public half of %s (%s)' % (self.key, err.strip().splitlines()[-1] if err.strip() else code))
        return out.strip()

    def _gpg(self):
        return [find_tool('gpg'), '--batch', '--no-tty'] + (['--homedir', self.gpg_homedir] if self.gpg_homedir else [])
