import pickle

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import sdk_metadata as md


def test_msc_is_sorted_list_of_path_and_revision():
    data = md.msc_bytes([('b.bin', 'c2'), ('a/x.json', 'c1')])
    assert pickle.loads(data) == [{'Path': 'a/x.json', 'Revision': 'c1'}, {'Path': 'b.bin', 'Revision': 'c2'}]


def test_msc_is_deterministic():
    entries = [('w%d.bin' % i, 'r') for i in range(50)]
    assert md.msc_bytes(entries) == md.msc_bytes(list(reversed(entries)))


def test_mdl_holds_escaped_id():
    assert pickle.loads(md.mdl_bytes('Qwen/Qwen2.5-0.5B')) == {'id': 'Qwen/Qwen2___5-0___5B'}


def test_mv_text_has_no_newline():
    assert md.mv_bytes('master', 1700000000) == b'Revision:master,CreatedAt:1700000000'


def test_read_msc_round_trip():
    assert md.read_msc(md.msc_bytes([('a', '1'), ('b', '')])) == {'a': '1', 'b': ''}


class Evil:
    def __reduce__(self):
        return (print, ('pwned',))


def test_read_msc_refuses_code():
    assert md.read_msc(pickle.dumps(Evil())) == {}
    with pytest.raises(pickle.UnpicklingError):
        md.load_pickle(pickle.dumps([Evil()]))


@pytest.mark.parametrize('garbage', [b'', b'not a pickle', pickle.dumps({'a': 1}), pickle.dumps([1, 'x'])])
def test_read_msc_tolerates_garbage(garbage):
    assert md.read_msc(garbage) == {}


def test_same_content_by_meaning():
    wanted = md.expected_files('o/n.x', 'master', 5, [('a', 'r')])
    # The SDK rewrites .mdl with its own pickle protocol and may refresh CreatedAt.
    assert md.same_content(md.MDL, pickle.dumps({'id': 'o/n___x'}, protocol=2), wanted[md.MDL])
    assert md.same_content(md.MV, b'Revision:master,CreatedAt:999', wanted[md.MV])
    assert not md.same_content(md.MV, b'Revision:v2,CreatedAt:5', wanted[md.MV])
    assert md.same_content(md.MSC, pickle.dumps([{'Revision': 'r', 'Path': 'a'}], protocol=2), wanted[md.MSC])
    assert not md.same_content(md.MSC, md.msc_bytes([('a', 'other')]), wanted[md.MSC])
    assert not md.same_content(md.MSC, None, wanted[md.MSC])


def test_msc_bytes_do_not_depend_on_string_identity():
    shared = 'c' * 40
    copies = [('a', shared), ('b', shared)]
    equal = [('a', ''.join(['c'] * 40)), ('b', ''.join(['c'] * 40))]
    assert md.msc_bytes(copies) == md.msc_bytes(equal)
