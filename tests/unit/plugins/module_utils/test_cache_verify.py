"""cache_info's full verification (cache_scan with cache_verify): each corrupt shape is a defect, in every layout it
applies to; a correct model is ok; a model nothing describes is unverifiable, never ok."""

import hashlib
import os
import pickle

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import Record
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.scan import scan
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import state_path
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.verify import bad_links, manifest_references

MODEL = 'Org/Tiny-1.5B'
OLD = {'config.json': b'{}', 'w/model.bin': b'weights' * 100, '.gitattributes': b'*.bin lfs\n'}
NEW = dict(OLD, **{'w/model.bin': b'better weights' * 90, 'new.txt': b'added'})
REVISIONS = {'config.json': 'c1', 'w/model.bin': 'c2', '.gitattributes': 'c1', 'new.txt': 'c2'}
TOPS = {
    'hub': 'hub/Org/Tiny-1___5B',
    'models': 'models/Org/Tiny-1___5B',
    'all': 'models/Org/Tiny-1___5B',
    'snapshots': 'models/Org--Tiny-1.5B/snapshots/master',
}
LINKS = {
    'hub': ('hub/Org/Tiny-1.5B', 'Tiny-1___5B'),
    'models': ('models/Org/Tiny-1.5B', 'Tiny-1___5B'),
    'all': ('hub/Org/Tiny-1___5B', '../../models/Org/Tiny-1___5B'),
    'snapshots': ('models/Org--Tiny-1.5B/snapshots/v1.0', 'master'),
}
LAYOUTS = list(TOPS)
WITH_METADATA = ['hub', 'models', 'all']


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as out:
        out.write(data)


def seed(root, layout, files=None, recorded=True):
    """A model as an install leaves it: files (NEW by default), SDK metadata up to 1.37, the layout's link and (``recorded``)
    its record."""
    files = NEW if files is None else files
    top = os.path.join(root, TOPS[layout])
    for rel, data in files.items():
        write(os.path.join(top, rel), data)
    if layout != 'snapshots':
        write(os.path.join(top, '.msc'), pickle.dumps([{'Path': p, 'Revision': REVISIONS[p]} for p in files], protocol=4))
        write(os.path.join(top, '.mdl'), pickle.dumps({'id': 'Org/Tiny-1___5B'}, protocol=4))
        write(os.path.join(top, '.mv'), b'Revision:master,CreatedAt:1700000000')
    link, target = LINKS[layout]
    os.makedirs(os.path.dirname(os.path.join(root, link)), exist_ok=True)
    os.symlink(target, os.path.join(root, link))
    if recorded:
        record = Record(state_path(root, 'records', TOPS[layout], '.json'))
        for rel, data in files.items():
            record.put(rel, len(data), hashlib.sha256(data).hexdigest(), REVISIONS[rel], os.lstat(os.path.join(top, rel)))
        record.save(model=MODEL, path=TOPS[layout])
    return top


def verified(root):
    """The one model directory found, checked in full."""
    models = scan(str(root), 'full')
    assert len(models) == 1, models
    return models[0]


@pytest.mark.parametrize('layout', LAYOUTS)
def test_a_correct_model_is_ok(tmp_path, layout):
    seed(str(tmp_path), layout)
    model = verified(tmp_path)
    assert (model['verification'], model['verified_against'], model['defects']) == ('ok', 'record', [])
    assert model['complete'] and bad_links(str(tmp_path)) == {}


@pytest.mark.parametrize('layout', LAYOUTS)
def test_a_model_nothing_describes_is_unverifiable(tmp_path, layout):
    seed(str(tmp_path), layout, recorded=False)
    model = verified(tmp_path)
    assert (model['verification'], model['verified_against'], model['defects']) == ('unverifiable', None, [])


def test_without_a_record_the_manifest_is_the_reference(tmp_path):
    seed(str(tmp_path), 'models', recorded=False)
    manifest = [{'id': MODEL, 'files': [{'path': p, 'size': len(d), 'sha256': hashlib.sha256(d).hexdigest(), 'revision': REVISIONS[p]}
                                        for p, d in NEW.items()]}]
    model = scan(str(tmp_path), 'full', manifests=manifest_references(manifest))[0]
    assert (model['verification'], model['verified_against']) == ('ok', 'manifest')
    os.unlink(os.path.join(str(tmp_path), TOPS['models'], 'new.txt'))
    model = scan(str(tmp_path), 'full', manifests=manifest_references(manifest))[0]
    assert (model['verification'], model['defects']) == ('failed', ['missing: new.txt', '.msc lists new.txt, which is not a file of the model here'])


def test_sdks_up_to_137_may_leave_out_gitattributes(tmp_path):
    top = seed(str(tmp_path), 'models')
    os.unlink(os.path.join(top, '.gitattributes'))
    write(os.path.join(top, '.msc'), pickle.dumps([{'Path': p, 'Revision': REVISIONS[p]} for p in NEW if p != '.gitattributes']))
    assert verified(tmp_path)['defects'] == []


# -- the corrupt shapes -------------------------------------------------------------------------


@pytest.mark.parametrize('layout', LAYOUTS)
def test_missing_files(tmp_path, layout):
    os.unlink(os.path.join(seed(str(tmp_path), layout), 'w/model.bin'))
    model = verified(tmp_path)
    assert model['verification'] == 'failed' and 'missing: w/model.bin' in model['defects'] and not model['complete']


@pytest.mark.parametrize('layout', LAYOUTS)
def test_files_mixed_from_two_commits(tmp_path, layout):
    write(os.path.join(seed(str(tmp_path), layout), 'w/model.bin'), OLD['w/model.bin'])
    assert verified(tmp_path)['defects'] == ['size mismatch: w/model.bin']


@pytest.mark.parametrize('layout', LAYOUTS)
def test_same_size_bytes_of_another_commit(tmp_path, layout):
    top = seed(str(tmp_path), layout)
    data = NEW['w/model.bin']
    write(os.path.join(top, 'w/model.bin'), data[::-1])
    assert verified(tmp_path)['defects'] == ['corrupt (sha256 differs): w/model.bin']


@pytest.mark.parametrize('layout', LAYOUTS)
def test_a_file_that_does_not_belong(tmp_path, layout):
    write(os.path.join(seed(str(tmp_path), layout), 'stray.bin'), b'?')
    assert verified(tmp_path)['defects'] == ['unexpected file: stray.bin']


@pytest.mark.parametrize('layout', WITH_METADATA)
def test_no_msc(tmp_path, layout):
    os.unlink(os.path.join(seed(str(tmp_path), layout), '.msc'))
    assert verified(tmp_path)['defects'] == ['no .msc: SDKs up to 1.37 download every file again']


@pytest.mark.parametrize('layout', WITH_METADATA)
@pytest.mark.parametrize('content', [b'not a pickle', pickle.dumps({'Path': 'x'}), b"cos\nsystem\n(S'true'\ntR."], ids=['garbage', 'dict', 'code'])
def test_an_unreadable_msc(tmp_path, layout, content):
    write(os.path.join(seed(str(tmp_path), layout), '.msc'), content)
    defects = verified(tmp_path)['defects']
    assert len(defects) == 1 and defects[0].startswith('unreadable .msc: '), defects


@pytest.mark.parametrize('layout', WITH_METADATA)
def test_an_msc_with_wrong_revisions(tmp_path, layout):
    wrong = dict(REVISIONS, **{'w/model.bin': 'c1'})
    write(os.path.join(seed(str(tmp_path), layout), '.msc'), pickle.dumps([{'Path': p, 'Revision': wrong[p]} for p in NEW]))
    assert verified(tmp_path)['defects'] == ['.msc lists w/model.bin at revision c1, expected c2']


def test_an_msc_listing_too_little_or_too_much(tmp_path):
    top = seed(str(tmp_path), 'models')
    listed = [{'Path': p, 'Revision': REVISIONS[p]} for p in NEW if p != 'config.json'] + [{'Path': 'gone.bin', 'Revision': 'c1'}]
    write(os.path.join(top, '.msc'), pickle.dumps(listed))
    assert verified(tmp_path)['defects'] == ['.msc does not list config.json', '.msc lists gone.bin, which is not a file of the model here']


@pytest.mark.parametrize('layout', WITH_METADATA)
@pytest.mark.parametrize('name, content, defect', [
    ('.mv', b'garbage', '.mv is not Revision:<revision>,CreatedAt:<unix time>'),
    ('.mdl', b'junk', '.mdl does not name Org/Tiny-1.5B'),
    ('.mdl', pickle.dumps({'id': 'Other/model'}), '.mdl does not name Org/Tiny-1.5B'),
], ids=['mv', 'mdl-junk', 'mdl-other'])
def test_junk_mv_or_mdl(tmp_path, layout, name, content, defect):
    write(os.path.join(seed(str(tmp_path), layout), name), content)
    assert verified(tmp_path)['defects'] == [defect]


@pytest.mark.parametrize('layout', LAYOUTS)
def test_a_final_file_name_linking_out_of_the_cache(tmp_path, layout):
    root = str(tmp_path / 'cache')
    top = seed(root, layout)
    outside = str(tmp_path / 'elsewhere.bin')
    write(outside, NEW['w/model.bin'])  # the right bytes, somewhere the cache does not own
    os.unlink(os.path.join(top, 'w/model.bin'))
    os.symlink(outside, os.path.join(top, 'w/model.bin'))
    assert verified(root)['defects'] == ['link out of the cache: %s/w/model.bin -> %s' % (TOPS[layout], outside)]


@pytest.mark.parametrize('layout', LAYOUTS)
def test_a_dangling_directory_link(tmp_path, layout):
    root = str(tmp_path)
    seed(root, layout)
    link, _target = LINKS[layout]
    os.unlink(os.path.join(root, link))
    os.symlink('gone', os.path.join(root, link))
    assert bad_links(root) == {link: 'dangling link: %s -> gone' % link}


def test_links_inside_the_cache_and_our_scratch_are_not_defects(tmp_path):
    root = str(tmp_path)
    seed(root, 'models')
    os.unlink(os.path.join(root, 'models/Org/Tiny-1.5B'))
    os.symlink(os.path.join(root, 'models/Org/Tiny-1___5B'), os.path.join(root, 'models/Org/Tiny-1.5B'))  # as SDK 1.37 makes it
    os.makedirs(os.path.join(root, '.modelseed/partial'))
    os.symlink('/nowhere', os.path.join(root, '.modelseed/partial/x'))
    assert bad_links(root) == {} and verified(root)['verification'] == 'ok'
