"""model_signatures: per-model OpenSSF model-signing signatures made from a manifest entry, judged by the real package."""

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import model_signatures
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.model_signatures import ModelSigner, ModelSigningError
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.perms import Perms
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import ModelState
from support.bundles import ModelSpec
from support.signing import ec_key, ssh_key

SPEC = ModelSpec('o/m', {'config.json': b'{}', 'w/x.bin': b'x' * 100, '.gitattributes': b'*.bin lfs\n', '.github/ci.yml': b'on: push\n'})


def test_a_signature_covers_the_model_files_and_is_kept_only_for_the_same_key_and_files(tmp_path):
    model = SPEC.entry()
    assert model_signatures.signature_name(model) == 'o--m--master.sig'
    assert model_signatures.covered_files(model) == [(f['path'], f['sha256']) for f in model['files'] if f['path'] in ('config.json', 'w/x.bin')]
    signer = ModelSigner(ec_key(tmp_path / 'a.pem'))
    path = tmp_path / 'o--m--master.sig'
    assert not signer.signed(model, str(path))
    path.write_bytes(signer.sign(model))
    assert signer.signed(model, str(path))
    assert not ModelSigner(ec_key(tmp_path / 'b.pem')).signed(model, str(path))
    changed = dict(model, files=[dict(f, sha256='0' * 64) if f['path'] == 'config.json' else f for f in model['files']])
    assert not signer.signed(changed, str(path))
    path.write_bytes(b'not json')
    assert not signer.signed(model, str(path))


def test_a_key_model_signing_cannot_use_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ModelSigningError, match='is not an elliptic-curve private key'):
        ModelSigner(ssh_key(tmp_path / 'ed25519'))


def test_beside_the_model_the_signature_is_placed_and_removed_again(tmp_path):
    model_dir = tmp_path / 'models' / 'o' / 'm'
    model_dir.mkdir(parents=True)
    perms = Perms(file_mode=0o640)
    model_signatures.place_beside(str(model_dir), b'sig', perms, sync=False)
    placed = tmp_path / 'models' / 'o' / 'm.sig'
    assert placed.read_bytes() == b'sig' and placed.stat().st_mode & 0o777 == 0o640
    model_signatures.place_beside(str(model_dir), None, perms, sync=False)
    assert not placed.exists() and model_dir.is_dir()


def test_what_makes_the_signature_beside_an_installed_model_stale(tmp_path):
    model_dir = tmp_path / 'models' / 'o' / 'm'
    model_dir.mkdir(parents=True)
    placed = tmp_path / 'models' / 'o' / 'm.sig'
    perms = Perms(file_mode=0o640)

    def stale(data):
        return model_signatures.stale_beside(str(model_dir), data, perms)

    assert stale(b'sig') == 'model-signing signature missing'
    assert stale(None) is None  # a bundle without one leaves the node's as it is
    placed.symlink_to('elsewhere.sig')
    assert stale(b'sig') == "model-signing signature differs from the bundle's"
    placed.unlink()
    placed.write_bytes(b'other')
    assert stale(b'sig') == "model-signing signature differs from the bundle's" and stale(None) is None
    placed.write_bytes(b'sig')
    placed.chmod(0o644)
    assert stale(b'sig') == 'ownership or mode of the model-signing signature differs'
    model_signatures.place_beside(str(model_dir), b'sig', perms, sync=False)
    assert stale(b'sig') is None


def test_removing_a_model_removes_the_signature_beside_it(tmp_path):
    state = ModelState(str(tmp_path), 'models', 'o/m', 'master')
    (tmp_path / 'models' / 'o' / 'm').mkdir(parents=True)
    (tmp_path / 'models' / 'o' / 'm.sig').write_bytes(b'sig')
    (tmp_path / 'models' / 'o' / 'other.sig').write_bytes(b'sig')
    assert state.remove()
    assert sorted(p.name for p in (tmp_path / 'models' / 'o').iterdir()) == ['other.sig']
