"""Each doc fragment documents exactly the options of the argument spec it stands for, with their types,
defaults, choices and elements, so that a spec and its documentation cannot drift apart."""

import importlib

import pytest
import yaml

from ansible_collections.modelseed.fleet.plugins.module_utils._module import args

HUB_ONLY = {name: spec for name, spec in args.HUB_ARG_SPEC.items() if name not in args.TRANSFER_ARG_SPEC}
FRAGMENTS = [('hub', HUB_ONLY), ('transfer', args.TRANSFER_ARG_SPEC), ('layout', args.LAYOUT_ARG_SPEC), ('sync', args.SYNC_ARG_SPEC)]


def documented(fragment):
    module = importlib.import_module('ansible_collections.modelseed.fleet.plugins.doc_fragments.' + fragment)
    return yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)['options']


@pytest.mark.parametrize('fragment, spec', FRAGMENTS, ids=[name for name, _spec in FRAGMENTS])
def test_fragment_documents_its_spec(fragment, spec):
    options = documented(fragment)
    assert sorted(options) == sorted(spec)
    for name, option in spec.items():
        doc = options[name]
        assert doc['type'] == option['type'], name
        assert doc.get('default') == option.get('default'), name
        assert doc.get('choices') == option.get('choices'), name
        assert doc.get('elements') == option.get('elements'), name
        assert doc['description'], name


def test_the_token_comes_from_the_environment_and_is_never_logged():
    token = args.HUB_ARG_SPEC['token']
    assert token['no_log'] is True and token['fallback'][1] == ['MODELSCOPE_API_TOKEN']
    assert 'MODELSCOPE_API_TOKEN' in ' '.join(documented('hub')['token']['description'])
