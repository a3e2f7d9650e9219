import hashlib
import json

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import delta
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from support.bundles import ModelSpec

OLD = {'config.json': b'{"v": 1}', 'w/model.bin': b'w' * 4096, 'tokenizer.json': b't' * 100}
NEW = dict(OLD, **{'config.json': b'{"v": 2}'})


def entry(files, revision='v2'):
    return ModelSpec('o/m', files, revision=revision).entry()


def base_models(*entries):
    models = {}
    for model in entries:
        models.setdefault(model['id'], []).append(model)
    return models


def test_rebase_lends_the_files_of_equal_size_and_sha256():
    rebased = delta.rebase(entry(NEW), base_models(entry(OLD, 'v1')))
    assert rebased['base'] == {'revision': 'v1', 'commit': entry(OLD, 'v1')['commit'], 'files': ['tokenizer.json', 'w/model.bin']}
    assert [f['path'] for f in bundle_format.carried_files(rebased)] == ['config.json']
    members = [name for name, kind, _size in bundle_format.tar_members(rebased)]
    assert members == ['.mdl', '.msc', '.mv', 'config.json']
    # The SDK metadata still lists every file: the installed model holds them all.
    assert rebased['metadata'] == bundle_format.metadata_list(entry(NEW))


def test_rebase_of_a_model_the_base_does_not_hold_travels_whole():
    model = entry(NEW)
    assert delta.rebase(model, base_models(dict(entry(OLD, 'v1'), id='o/other'))) is model


def test_rebase_prefers_the_same_revision_and_refuses_a_choice_it_cannot_make():
    same = delta.rebase(entry(NEW), base_models(entry(OLD, 'v1'), entry(NEW, 'v2')))
    assert same['base']['revision'] == 'v2' and bundle_format.carried_files(same) == []
    with pytest.raises(BundleError, match='holds revisions v0, v1 of o/m and not v2'):
        delta.rebase(entry(NEW), base_models(entry(OLD, 'v1'), entry(OLD, 'v0')))


def manifest_with(base, tar_size=10 ** 6):
    model = dict(entry(NEW), base=base, tar_size=tar_size, tar_sha256='0' * 64)
    return json.dumps({'format': bundle_format.FORMAT, 'version': bundle_format.VERSION, 'models': [model],
                       'total_bytes': model['bytes']}).encode()


@pytest.mark.parametrize('base, message', [
    ({'revision': 'v1', 'commit': 'c', 'files': ['nope']}, 'lends files the model does not list'),
    ({'revision': 'v1', 'commit': 'c', 'files': ['w/model.bin', 'config.json']}, 'sorted and listed once'),
    ({'revision': 'v1', 'commit': '', 'files': []}, 'base has no commit'),
    ({'revision': '../x', 'commit': 'c', 'files': []}, 'base'),
    ('v1', 'base is not an object'),
])
def test_a_malformed_base_is_refused(base, message):
    with pytest.raises(BundleError, match=message):
        bundle_format.parse_manifest(manifest_with(base))


def test_a_delta_tar_need_only_hold_the_carried_files():
    base = {'revision': 'v1', 'commit': 'c', 'files': ['tokenizer.json', 'w/model.bin']}
    assert bundle_format.parse_manifest(manifest_with(base, tar_size=len(NEW['config.json'])))
    with pytest.raises(BundleError, match='more than its'):
        bundle_format.parse_manifest(manifest_with(dict(base, files=[]), tar_size=len(NEW['config.json'])))


def test_read_base_manifest_names_its_sha256(tmp_path):
    path = tmp_path / 'manifest.json'
    data = bundle_format.manifest_bytes([dict(entry(OLD, 'v1'), tar_size=10 ** 6, tar_sha256='0' * 64)])
    path.write_bytes(data)
    models, sha = delta.read_base_manifest(str(path))
    assert sha == hashlib.sha256(data).hexdigest() and list(models) == ['o/m']
    with pytest.raises(BundleError, match='does not exist'):
        delta.read_base_manifest(str(tmp_path / 'missing.json'))
    path.write_bytes(b'{}')
    with pytest.raises(BundleError, match='base_manifest .*not a modelseed.fleet/bundle manifest'):
        delta.read_base_manifest(str(path))
