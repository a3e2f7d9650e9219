import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils.hub_api import (
    DEFAULT_ENDPOINT, HubError, RemoteFile, auth_headers, parse_listing, resolve_endpoint, select_files)

SHA = 'a' * 64


def blob(path, size=1, sha=SHA, rev='c0'):
    return {'Name': path.rsplit('/', 1)[-1], 'Path': path, 'Type': 'blob', 'Size': size, 'Sha256': sha, 'Revision': rev}


def test_parse_listing_keeps_blobs_sorted():
    files = parse_listing([blob('z.bin', 3), {'Path': 'sub', 'Type': 'tree'}, blob('sub/a b.json'), blob('.hidden/x')], 'o/n')
    assert [f.path for f in files] == ['.hidden/x', 'sub/a b.json', 'z.bin']
    assert files[-1] == RemoteFile('z.bin', 3, SHA, 'c0')


def test_parse_listing_lowercases_hash():
    assert parse_listing([blob('a', sha='A' * 64)], 'o/n')[0].sha256 == 'a' * 64


@pytest.mark.parametrize('entry, message', [
    (blob('../etc/passwd'), 'unsafe file name'),
    (blob('/abs'), 'unsafe file name'),
    (blob('a//b'), 'unsafe file name'),
    (blob('.msc'), 'unsafe file name'),
    (blob('a', size=-1), 'invalid size'),
    (blob('a', size='1'), 'invalid size'),
    (blob('a', sha=None), 'without a sha256'),
    (blob('a', sha='xyz'), 'without a sha256'),
])
def test_parse_listing_rejects(entry, message):
    with pytest.raises(HubError, match=message):
        parse_listing([entry], 'o/n')


def test_select_files():
    files = parse_listing([blob('config.json'), blob('model.safetensors'), blob('sub/tokenizer.json'), blob('x.bin')], 'o/n')
    assert [f.path for f in select_files(files, ['*.json'], [])] == ['config.json', 'sub/tokenizer.json']
    assert [f.path for f in select_files(files, [], ['*.bin'])] == ['config.json', 'model.safetensors', 'sub/tokenizer.json']
    assert [f.path for f in select_files(files, ['sub/*'], [])] == ['sub/tokenizer.json']
    assert select_files(files, ['*.gguf'], []) == []


def test_endpoint_resolution():
    assert resolve_endpoint(None, {}) == DEFAULT_ENDPOINT
    assert resolve_endpoint('http://h:1/', {'MODELSCOPE_ENDPOINT': 'x'}) == 'http://h:1'
    assert resolve_endpoint(None, {'MODELSCOPE_ENDPOINT': 'http://e', 'MODELSCOPE_DOMAIN': 'd'}) == 'http://e'
    assert resolve_endpoint(None, {'MODELSCOPE_DOMAIN': 'mirror.local:8443'}) == 'https://mirror.local:8443'


def test_auth_headers():
    assert auth_headers(None) == {}
    assert auth_headers('t0k') == {'Authorization': 'Bearer t0k', 'Cookie': 'm_session_id=t0k'}
