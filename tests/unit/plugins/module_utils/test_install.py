"""install: swaps with and without RENAME_EXCHANGE, recovery of killed runs, what prune may touch."""

import json
import os

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.install import InstallError, ModelInstall, Perms
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.reader import Bundle, DirSource
from ansible_collections.modelseed.fleet.plugins.module_utils._cache import state
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.perms import ensure_dirs
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import recorded_models, recover_pending, state_path
from ansible_collections.modelseed.fleet.plugins.module_utils._fs import tree
from support.bundles import ModelSpec, with_files, write_bundle

SPEC = ModelSpec('o/m.x', {'a.bin': b'a' * 3000, 'sub/b.txt': b'b'})


def installed(tmp_path, spec, layout='all', name='b', perms=None):
    write_bundle(tmp_path / name, [spec])
    bundle = Bundle(DirSource(str(tmp_path / name)))
    target = ModelInstall(str(tmp_path / 'cache'), layout, bundle.models[0], perms=perms)
    return bundle, target


def put_in_place(bundle, target):
    os.makedirs(target.root, exist_ok=True)
    target.decide()
    target.stage(bundle)
    target.commit()
    return target


@pytest.mark.parametrize('kernel_exchange', [True, False])
def test_replace_with_and_without_exchange(tmp_path, monkeypatch, kernel_exchange):
    bundle, target = installed(tmp_path, SPEC)
    put_in_place(bundle, target)
    if not kernel_exchange:
        monkeypatch.setattr(tree, 'exchange', lambda first, second: False)
        monkeypatch.setattr(state, 'exchange', lambda first, second: False)
    new = with_files(SPEC, {'a.bin': b'new'})
    bundle2, target2 = installed(tmp_path, new, name='b2')
    plan = target2.decide()
    assert plan.action == 'replace'
    put_in_place(bundle2, target2)
    assert open(os.path.join(target2.dir, 'a.bin'), 'rb').read() == b'new'
    assert os.readlink(os.path.join(target2.root, 'hub/o/m___x')) == '../../models/o/m___x'
    assert not os.listdir(os.path.join(target2.root, '.modelseed/trash'))
    assert target2.decide().action == 'none'


def test_pending_record_is_promoted_only_when_the_swap_happened(tmp_path):
    bundle, target = installed(tmp_path, SPEC, layout='models')
    os.makedirs(target.root)
    target.stage(bundle)
    # Killed before the swap: the pending record goes, the staging goes, nothing is installed.
    assert not recover_pending(target.root, target.rel)
    assert not os.path.exists(target.pending_path) and not os.path.exists(target.staging)
    assert not os.path.exists(target.record_path)
    # Killed right after the swap: the record is promoted.
    target.stage(bundle)
    os.makedirs(os.path.dirname(target.dir))
    os.rename(target.staging, target.dir)
    assert recover_pending(target.root, target.rel)
    assert os.path.exists(target.record_path) and not os.path.exists(target.pending_path)
    plan = target.decide()  # the kill came before the link of the dotted name: only that is left to do
    assert plan.action == 'fix' and plan.links == [('models/o/m.x', 'm___x')] and not plan.metadata


def test_recovery_removes_temp_files_a_kill_left(tmp_path):
    bundle, target = installed(tmp_path, SPEC, layout='models')
    put_in_place(bundle, target)
    incoming = os.path.dirname(target.pending_path)
    leftovers = [os.path.join(incoming, '.%s.install.abc123.tmp' % os.path.basename(target.staging)),
                 os.path.join(target.dir, '..msc.xyz.tmp'),
                 os.path.join(target.root, 'models/o/m.x.modelseed-link')]
    for path in leftovers:
        open(path, 'w').close()
    target.recover()
    assert not any(os.path.lexists(p) for p in leftovers)


def test_a_kept_staging_directory_loses_the_metadata_temps_a_kill_left(tmp_path):
    """The next attempt swaps a kept staging directory in whole: a metadata file half written into it must not go too."""
    bundle, target = installed(tmp_path, SPEC, layout='models')
    os.makedirs(target.root)
    target.stage(bundle)
    half_written = os.path.join(target.staging, '..msc.abc123.tmp')
    open(half_written, 'w').close()
    staged = sorted(os.listdir(target.staging))
    target.recover(keep_staged=True)
    assert sorted(os.listdir(target.staging)) == sorted(set(staged) - {'..msc.abc123.tmp'})


def test_forged_records_are_never_pruned(tmp_path):
    bundle, target = installed(tmp_path, SPEC, layout='models')
    put_in_place(bundle, target)
    records = os.path.join(target.root, '.modelseed/records')
    forged = {'format': 1, 'files': {'x': {}}, 'layout': 'models', 'model': 'o/m.x', 'revision': 'master', 'path': '../../etc'}
    with open(os.path.join(records, 'forged.json'), 'w') as handle:
        json.dump(forged, handle)
    assert [rel for rel, rec in recorded_models(target.root, 'models')] == ['models/o/m___x']
    assert recorded_models(target.root, 'snapshots') == []


def test_install_never_goes_through_a_symlinked_parent(tmp_path):
    root = tmp_path / 'cache'
    (root / 'models').mkdir(parents=True)
    (tmp_path / 'elsewhere').mkdir()
    os.symlink(str(tmp_path / 'elsewhere'), str(root / 'models/o'))
    with pytest.raises(InstallError, match='symbolic link'):
        ensure_dirs(str(root), 'models/o', Perms())
    bundle, target = installed(tmp_path, SPEC, layout='models')
    os.makedirs(target.root, exist_ok=True)
    target.stage(bundle)
    with pytest.raises(InstallError):
        target.commit()
    assert not os.listdir(str(tmp_path / 'elsewhere'))


def test_modes_never_world_writable_and_metadata_as_configured():
    """file_mode reaches the SDK metadata too; shared adds only the group write SDKs up to 1.37 need on .mdl and .mv."""
    perms = Perms(file_mode=0o640, dir_mode=0o750, shared=True, gid=0)
    assert perms.file_mode('.msc') == 0o640 and perms.file_mode('.mdl') == 0o660 and perms.file_mode('w.bin') == 0o640
    assert Perms(file_mode=0o600).file_mode('.mv') == 0o600
    assert perms.dir == 0o2750 and perms.shared_dir == 0o2770
    assert not any(mode & 0o002 for mode in (perms.file_mode('.mdl'), perms.file_mode('.mv'), perms.shared_dir))


def test_records_keep_the_facts_cache_info_reads(tmp_path):
    bundle, target = installed(tmp_path, SPEC, layout='snapshots')
    put_in_place(bundle, target)
    record = json.load(open(state_path(target.root, 'records', target.rel, '.json')))
    assert record['model'] == 'o/m.x' and record['layout'] == 'snapshots' and record['path'] == target.rel
    assert record['tar_sha256'] == bundle.models[0]['tar_sha256'] and record['commit'] == SPEC.resolved_commit()
    assert sorted(record['files']) == ['a.bin', 'sub/b.txt']
