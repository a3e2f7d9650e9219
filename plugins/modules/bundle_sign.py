#!/usr/bin/python
# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: bundle_sign
short_description: Sign the manifest of a model bundle where the key is
version_added: 0.1.0
description:
  - Signs C(manifest.json) of a bundle made by M(modelseed.fleet.cache_bundle) and writes the signature beside it
    as C(manifest.json.sig). The manifest names the sha256 of every file and every tar of the bundle, so its
    signature vouches for the whole bundle. M(modelseed.fleet.cache_install) verifies it against a trust list
    before it reads any tar.
  - Run it on the host that holds the key (for example the controller, with C(delegate_to)); the key stays there.
    Only the signing tool reads the key; the module passes it the key's path, never its contents.
  - V(ssh) (the default) signs with C(ssh-keygen -Y sign -f KEY -n NAMESPACE), which needs OpenSSH 8.1 or newer.
    V(gpg) makes a detached, armored OpenPGP signature with C(gpg --detach-sign), the namespace recorded as the
    signature notation C(namespace@modelseed.fleet).
  - A signature already there that verifies with the same key and namespace is kept (no change); any other is
    replaced, written to a temporary file and renamed into place.
  - With O(model_signing_key), each model of the bundle also gets a signature of its own in the OpenSSF model-signing
    format, C(<owner>--<name>--<revision>.sig) beside its tar or model directory, which
    M(modelseed.fleet.cache_install) puts beside the installed model directory, for
    C(model_signing verify key) on the node. It covers the model's files by path and sha256 as C(manifest.json)
    names them (not C(.msc)/C(.mdl)/C(.mv), which each layout writes afresh, nor the C(.git*) paths model-signing
    always ignores), so it is made from the manifest alone.
author:
  - modelseed.fleet team (@modelseed)
requirements:
  - The Python package C(model-signing) on the host that signs, for O(model_signing_key) only.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Checks the signature there is and reports whether it would sign; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  path:
    description:
      - The bundle directory, holding C(manifest.json), on the host the module runs on.
    type: path
    required: true
  method:
    description:
      - V(ssh) for an OpenSSH signature, V(gpg) for an OpenPGP one.
    type: str
    choices: [ssh, gpg]
    default: ssh
  key:
    description:
      - For V(ssh), the private key file (without a passphrase), or the C(.pub) file of a key loaded in the
        C(ssh-agent) that C(SSH_AUTH_SOCK) names.
      - For V(gpg), the key to sign with (a fingerprint, key id or user id) of the keyring in O(gpg_homedir);
        it must sign without asking for a passphrase (none, or unlocked in C(gpg-agent)).
      - A leading C(~) is expanded (and C($VARIABLES)), as for any path.
    type: path
    required: true
  namespace:
    description:
      - What the signature is for. The nodes accept only signatures made for the namespace they are told, so a
        key that also signs other things cannot be used to pass off one of those as a bundle.
    type: str
    default: modelseed-bundle
  gpg_homedir:
    description:
      - GnuPG home directory for V(gpg); defaults to C(GNUPGHOME) or C(~/.gnupg).
    type: path
  model_signing_key:
    description:
      - An elliptic-curve private key (PEM, P-256, P-384 or P-521, without a passphrase) on the host the module runs
        on. When set, every model of the bundle also gets a model-signing signature made with it; a signature
        there that this key made over the same files is kept.
      - Needs the Python package C(model-signing) on that host.
    type: path
seealso:
  - module: modelseed.fleet.cache_bundle
  - module: modelseed.fleet.cache_install
'''

EXAMPLES = r'''
- name: Sign the bundle with the release key of the controller
  modelseed.fleet.bundle_sign:
    path: /srv/modelseed/bundle
    key: /home/release/.ssh/modelseed_release
  delegate_to: localhost

- name: Sign the bundle, and each model in the OpenSSF model-signing format
  modelseed.fleet.bundle_sign:
    path: /srv/modelseed/bundle
    key: /home/release/.ssh/modelseed_release
    model_signing_key: /home/release/model-signing.pem
  delegate_to: localhost

- name: Sign with GnuPG
  modelseed.fleet.bundle_sign:
    path: /srv/modelseed/bundle
    method: gpg
    key: 29D34B37C8DFB4A4F9AC0F656EBA3F5691DD68C2
'''

RETURN = r'''
signature:
  description: Path of the signature file.
  returned: always
  type: str
  sample: /srv/modelseed/bundle/manifest.json.sig
manifest_sha256:
  description: sha256 of the C(manifest.json) that was signed (or would be).
  returned: always
  type: str
  sample: 0c5b7e0f8a1c0bd3d5b6f4d3a2e1f0c9b8a7d6e5f4c3b2a1908f7e6d5c4b3a21
model_signatures:
  description: The per-model signature files of the bundle (with O(model_signing_key)), and whether each was (or would be) written.
  returned: always
  type: list
  elements: dict
  sample: [{"model": "Qwen/Qwen2.5-0.5B-Instruct", "revision": "master", "path": "/srv/modelseed/bundle/Qwen--Qwen2.5-0.5B-Instruct--master.sig",
            "changed": true}]
msg:
  description: What changed and why, or why nothing did.
  returned: always
  type: str
  sample: "signed manifest.json (sha256 0c5b7e0f8a1c) with ssh key /home/release/.ssh/modelseed_release for namespace modelseed-bundle"
'''

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import MANIFEST, MAX_MANIFEST_BYTES, parse_manifest
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.model_signatures import PACKAGE, ModelSigner, available, signature_name
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.signature import DEFAULT_NAMESPACE, MAX_SIGNATURE_BYTES, METHODS, SIGNATURE
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.signer import Signer
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.paths import atomic_write, read_bytes
from ansible_collections.modelseed.fleet.plugins.module_utils._module.failure import fail


def create_module():
    return AnsibleModule(argument_spec=dict(
        path=dict(type='path', required=True),
        method=dict(type='str', default='ssh', choices=list(METHODS)),
        key=dict(type='path', required=True, no_log=False),  # where the key is, or its id: not the key itself
        namespace=dict(type='str', default=DEFAULT_NAMESPACE),
        gpg_homedir=dict(type='path'),
        model_signing_key=dict(type='path', no_log=False),  # a path, not the key
    ), supports_check_mode=True)


def sign_manifest(module, manifest, sig_path, result):
    """Sign manifest.json unless its signature holds already; returns the message."""
    p = module.params
    signer = Signer(p['method'], p['key'], p['namespace'], p['gpg_homedir'])
    what = '%s (sha256 %s) with %s key %s for namespace %s' % (MANIFEST, result['manifest_sha256'][:12], p['method'], p['key'], p['namespace'])
    if signer.signed(manifest, read_bytes(sig_path, MAX_SIGNATURE_BYTES)):
        return '%s is signed already by %s' % (SIGNATURE, what.split(' with ', 1)[1])
    result['changed'] = True
    if module.check_mode:
        return 'would sign %s' % what
    atomic_write(sig_path, signer.sign(manifest), 0o644)
    return 'signed %s' % what


def sign_models(module, manifest, result):
    """Write each model's model-signing signature that is missing or not this key's over its files; returns the message."""
    signer = ModelSigner(module.params['model_signing_key'])
    for model in parse_manifest(manifest)['models']:
        path = os.path.join(module.params['path'], signature_name(model))
        entry = dict(model=model['id'], revision=model['revision'], path=path, changed=not signer.signed(model, path))
        result['model_signatures'].append(entry)
        if entry['changed'] and not module.check_mode:
            atomic_write(path, signer.sign(model), 0o644)
    written = ['%s@%s' % (e['model'], e['revision']) for e in result['model_signatures'] if e['changed']]
    result['changed'] = result['changed'] or bool(written)
    if not written:
        return 'the model-signing signatures of all %d model(s) hold' % len(result['model_signatures'])
    return '%s model-signing signature(s) of %s' % ('would write' if module.check_mode else 'wrote', ', '.join(written))


def main():
    module = create_module()
    p = module.params
    manifest_path = os.path.join(p['path'], MANIFEST)
    sig_path = os.path.join(p['path'], SIGNATURE)
    result = dict(changed=False, signature=sig_path, model_signatures=[])
    if not os.path.isfile(manifest_path):
        module.fail_json(msg='%s has no %s: build the bundle first (modelseed.fleet.cache_bundle)' % (p['path'], MANIFEST), **result)
    if not p['namespace']:
        module.fail_json(msg='namespace must not be empty', **result)
    if p['method'] == 'ssh' and not os.path.isfile(p['key']):
        module.fail_json(msg='key %s is not a file on this host' % p['key'], **result)
    if p['model_signing_key'] and not available():
        module.fail_json(msg=missing_required_lib(PACKAGE, reason='model_signing_key (per-model signatures)'), **result)
    if p['model_signing_key'] and not os.path.isfile(p['model_signing_key']):
        module.fail_json(msg='model_signing_key %s is not a file on this host' % p['model_signing_key'], **result)
    with open(manifest_path, 'rb') as handle:
        manifest = handle.read(MAX_MANIFEST_BYTES + 1)
    result['manifest_sha256'] = hashlib.sha256(manifest).hexdigest()
    try:
        messages = [sign_manifest(module, manifest, sig_path, result)]
        if p['model_signing_key']:
            messages.append(sign_models(module, manifest, result))
    except ModelseedError as exc:
        fail(module, exc, result)
    module.exit_json(msg='; '.join(messages), **result)


if __name__ == '__main__':
    main()
