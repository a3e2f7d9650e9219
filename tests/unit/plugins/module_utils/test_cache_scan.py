import hashlib
import os

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata as md
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import Record
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.scan import scan
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import state_path


def sdk_written(top, files, msc_paths=None):
    """A model directory as an SDK <= 1.37 leaves it: files plus .msc/.mdl/.mv, no record of ours."""
    os.makedirs(top)
    for rel, data in files.items():
        path = os.path.join(top, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as out:
            out.write(data)
    for name, data in md.expected_files('o/n.x', 'master', 1, [(p, 'c1') for p in (msc_paths or files)]).items():
        with open(os.path.join(top, name), 'wb') as out:
            out.write(data)


def by_layout(models):
    return dict((m['layout'], m) for m in models)


def test_every_generation_is_found(tmp_path):
    root = str(tmp_path)
    sdk_written(os.path.join(root, 'hub/o/n___x'), {'a.bin': b'1'})
    sdk_written(os.path.join(root, 'models/o/m___y'), {'a.bin': b'1', 'sub/b': b'22'})
    os.makedirs(os.path.join(root, 'models/o--n.x/snapshots/master'))
    with open(os.path.join(root, 'models/o--n.x/snapshots/master/a.bin'), 'wb') as out:
        out.write(b'1')
    sdk_written(os.path.join(root, 'old/plain'), {'a.bin': b'1'})
    found = by_layout(scan(root))
    assert found['hub']['id'] == 'o/n.x' and found['hub']['sdk_generations'] == ['1.15-1.22']
    assert found['models']['id'] == 'o/m.y' and found['models']['files'] == 2 and found['models']['bytes'] == 3
    assert found['models']['sdk_generations'] == ['1.23-1.37', '>=1.38']
    assert found['snapshots']['id'] == 'o/n.x' and found['snapshots']['revision'] == 'master'
    assert found['legacy']['sdk_generations'] == ['<=1.14']
    assert all(m['complete'] for m in found.values())


def test_missing_files_and_metadata(tmp_path):
    root = str(tmp_path)
    sdk_written(os.path.join(root, 'models/o/gone'), {'a.bin': b'1'}, msc_paths=['a.bin', 'b.bin'])
    sdk_written(os.path.join(root, 'models/o/nomsc'), {'a.bin': b'1'})
    os.unlink(os.path.join(root, 'models/o/nomsc/.msc'))
    found = dict((m['id'], m) for m in scan(root))
    assert found['o/gone']['missing'] == ['b.bin'] and not found['o/gone']['complete']
    assert found['o/gone']['sdk_generations'] == []
    assert not found['o/nomsc']['complete']


def test_all_layout_and_record_checks(tmp_path):
    root = str(tmp_path)
    top = os.path.join(root, 'models/o/n')
    sdk_written(top, {'a.bin': b'abc', 'b.bin': b'def'})
    os.makedirs(os.path.join(root, 'hub/o'))
    os.symlink('../../models/o/n', os.path.join(root, 'hub/o/n'))
    record = Record(state_path(root, 'records', 'models/o/n', '.json'))
    for rel, data in (('a.bin', b'abc'), ('b.bin', b'def')):
        record.put(rel, 3, hashlib.sha256(data).hexdigest(), 'c1', os.stat(os.path.join(top, rel)))
    record.save(model='o/n', revision='v1', commit='c' * 40)
    (model,) = scan(root)
    assert model['layout'] == 'all' and model['recorded'] and model['revision'] == 'v1'
    assert model['sdk_generations'] == ['1.15-1.22', '1.23-1.37', '>=1.38']
    with open(os.path.join(top, 'b.bin'), 'r+b') as f:
        f.write(b'X')  # same size, other bytes, new mtime
    (model,) = scan(root)
    assert model['modified'] == ['b.bin'] and model['complete']
    (model,) = scan(root, verify='full')
    assert model['corrupt'] == ['b.bin'] and not model['complete']


def test_snapshot_shadowed_by_models_dir(tmp_path):
    root = str(tmp_path)
    sdk_written(os.path.join(root, 'models/o/n'), {'a.bin': b'1'})
    os.makedirs(os.path.join(root, 'models/o--n/snapshots/master'))
    with open(os.path.join(root, 'models/o--n/snapshots/master/a.bin'), 'wb') as out:
        out.write(b'1')
    found = by_layout(scan(root))
    assert found['snapshots']['sdk_generations'] == []


def test_names_filter(tmp_path):
    root = str(tmp_path)
    sdk_written(os.path.join(root, 'models/o/a'), {'f': b'1'})
    sdk_written(os.path.join(root, 'models/o/b'), {'f': b'1'})
    assert [m['id'] for m in scan(root, names=['o/b'])] == ['o/b']


def test_metadata_only_dir_shadows_the_snapshot(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, 'models/o/n'))
    with open(os.path.join(root, 'models/o/n/.mdl'), 'wb') as out:
        out.write(md.mdl_bytes('o/n'))
    os.makedirs(os.path.join(root, 'models/o--n/snapshots/master'))
    with open(os.path.join(root, 'models/o--n/snapshots/master/a.bin'), 'wb') as out:
        out.write(b'1')
    found = by_layout(scan(root))
    assert found['snapshots']['shadowed'] and found['snapshots']['sdk_generations'] == []
    assert not found['models']['complete']
