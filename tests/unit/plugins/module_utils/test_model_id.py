import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.model_id import InvalidName, check_revision, escape_name, looks_like_commit, split_model_id


@pytest.mark.parametrize('model_id, expected', [
    ('Qwen/Qwen2.5-0.5B', ('Qwen', 'Qwen2.5-0.5B')),
    ('deepseek-ai/DeepSeek_R1', ('deepseek-ai', 'DeepSeek_R1')),
    ('a/b', ('a', 'b')),
])
def test_valid_ids(model_id, expected):
    assert split_model_id(model_id) == expected


@pytest.mark.parametrize('model_id', [
    '', 'noslash', 'a/b/c', '../x', 'x/..', '/abs', 'a/.hidden', '.a/b', 'a b/c', 'a/b c', 'a/b\n',
    'ü/model', 'a/' + 'x' * 200, 'a/b..c', None,
])
def test_invalid_ids(model_id):
    with pytest.raises(InvalidName, match='invalid model id'):
        split_model_id(model_id)


@pytest.mark.parametrize('revision', ['master', 'v1.0', 'release-2024_01', 'a' * 40, '1.0+cu121'])
def test_valid_revisions(revision):
    assert check_revision(revision) == revision


@pytest.mark.parametrize('revision', ['', '..', 'a/b', '../x', '.hidden', 'x y', 'a..b'])
def test_invalid_revisions(revision):
    with pytest.raises(InvalidName, match='invalid revision'):
        check_revision(revision)


def test_escape_only_dots():
    assert escape_name('Qwen2.5-0.5B-Instruct') == 'Qwen2___5-0___5B-Instruct'
    assert escape_name('plain-name_1') == 'plain-name_1'


def test_commit_detection():
    assert looks_like_commit('0123abc')
    assert looks_like_commit('f' * 40)
    assert not looks_like_commit('master')
    assert not looks_like_commit('abc')
