import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import alias_links, generations, layout_for_versions, model_dir

MODEL = 'Qwen/Qwen2.5-0.5B'


@pytest.mark.parametrize('layout, revision, expected', [
    ('hub', 'master', 'hub/Qwen/Qwen2___5-0___5B'),
    ('models', 'master', 'models/Qwen/Qwen2___5-0___5B'),
    ('all', 'v1', 'models/Qwen/Qwen2___5-0___5B'),
    ('snapshots', 'master', 'models/Qwen--Qwen2.5-0.5B/snapshots/master'),
    ('snapshots', 'v1.0', 'models/Qwen--Qwen2.5-0.5B/snapshots/v1.0'),
])
def test_model_dirs(layout, revision, expected):
    assert model_dir(layout, MODEL, revision) == expected


def test_all_layout_links_hub_relatively():
    assert alias_links('all', MODEL) == [
        ('hub/Qwen/Qwen2___5-0___5B', '../../models/Qwen/Qwen2___5-0___5B'),
        ('models/Qwen/Qwen2.5-0.5B', 'Qwen2___5-0___5B'),
        ('hub/Qwen/Qwen2.5-0.5B', 'Qwen2___5-0___5B'),
    ]
    assert alias_links('all', 'o/plain') == [('hub/o/plain', '../../models/o/plain')]


def test_dotted_names_get_relative_links():
    assert alias_links('hub', MODEL) == [('hub/Qwen/Qwen2.5-0.5B', 'Qwen2___5-0___5B')]
    assert alias_links('models', MODEL) == [('models/Qwen/Qwen2.5-0.5B', 'Qwen2___5-0___5B')]
    assert alias_links('snapshots', MODEL) == []
    assert alias_links('models', 'o/plain') == []


def test_generations():
    assert generations('all') == ['1.15-1.22', '1.23-1.37', '>=1.38']
    assert generations('models') == ['1.23-1.37', '>=1.38']
    assert generations('hub') == ['1.15-1.22']


@pytest.mark.parametrize('versions, layout', [
    ([], 'all'),
    (['1.40.2'], 'snapshots'),
    (['1.38.0', '1.39.1'], 'snapshots'),
    (['1.37.1'], 'models'),
    (['1.23.0'], 'models'),
    (['1.15.0'], 'hub'),
    (['1.22.3'], 'hub'),
    (['1.15.0', '1.40.2'], 'all'),
    (['1.37.1', '1.40.2'], 'all'),
    (['garbage'], 'all'),
    (['2.0.0'], 'snapshots'),
])
def test_layout_for_versions(versions, layout):
    assert layout_for_versions(versions) == layout
