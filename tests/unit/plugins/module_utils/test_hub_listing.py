import hashlib
from urllib.parse import parse_qs

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._hub.api import (
    DEFAULT_ENDPOINT,
    HubApi,
    HubError,
    RemoteFile,
    auth_headers,
    parse_listing,
    resolve_endpoint,
    select_files,
)
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpClient
from support.interrupt import wait_until
from support.mshub import MsHub, make_repo

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


@pytest.mark.parametrize('entry, message', [
    ({'Path': 'vendor/lib', 'Type': 'commit', 'Size': 0, 'Sha256': ''}, "neither a file nor a directory .type 'commit'"),
    ({'Path': 'x.bin', 'Size': 1, 'Sha256': SHA}, 'neither a file nor a directory .type None'),
    ('x.bin', 'neither a file nor a directory'),
])
def test_parse_listing_refuses_entries_it_does_not_know(entry, message):
    """An entry that is neither a file nor a directory is not dropped: the model would lack it silently."""
    with pytest.raises(HubError, match=message):
        parse_listing([blob('a'), entry], 'o/n')


# Listings the hub cuts at LISTING_CAP entries, served by the real loopback hub.
NESTED = 'o/nested'  # 3,500 files: big/x and big/y of 1,600 each (big alone is over the cap), small/ and one on top
WIDE = 'o/wide'      # 3,500 files directly in one directory
FLAT = 'o/flat'      # 3,500 files at the top, no directory at all
SMALL = 'o/small'


def listings_since(hub, mark, expected, model):
    """(Root, Recursive) of the listings of ``model`` asked since ``mark``. The hub logs a request just after answering
    it, so the last answer of an earlier test may be logged after ``mark``: only this model's count."""
    def listings():
        return [(parse_qs(r.query).get('Root', [''])[0], parse_qs(r.query)['Recursive'][0])
                for r in hub.log.entries(mark) if r.model == model]
    wait_until(lambda: len(listings()) >= expected, timeout=10)
    return listings()


def tiny_files(paths):
    return {p: p + '\n' for p in paths}


NESTED_PATHS = (['big/x/%04d.json' % i for i in range(1600)] + ['big/y/%04d.json' % i for i in range(1600)]
                + ['small/deep/er/%03d.txt' % i for i in range(299)] + ['config.json'])
WIDE_PATHS = ['config.json'] + ['shards/%04d.bin' % i for i in range(3499)]
FLAT_PATHS = ['%04d.bin' % i for i in range(3500)]


@pytest.fixture(scope='module')
def capped_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp('capped')
    commits = {model: make_repo(root, model, tiny_files(paths))
               for model, paths in ((NESTED, NESTED_PATHS), (WIDE, WIDE_PATHS), (FLAT, FLAT_PATHS), (SMALL, ['config.json', 'a/b.json']))}
    with MsHub(root) as server:
        yield server, HubApi(HttpClient(retries=0), server.url), commits


def test_capped_listing_is_recovered_by_root_scoped_listings(capped_hub):
    hub, api, commits = capped_hub
    mark = len(hub.log)
    files = api.list_files(NESTED, commits[NESTED])
    assert [f.path for f in files] == sorted(NESTED_PATHS)
    assert all(f.sha256 == hashlib.sha256((f.path + '\n').encode()).hexdigest() for f in files)
    # The whole tree, the top one level deep, then level by level: each directory whole, and one level deep
    # only when it comes back at the cap.
    assert listings_since(hub, mark, 7, NESTED) == [('', 'True'), ('', 'False'), ('big', 'True'), ('big', 'False'), ('small', 'True'),
                                            ('big/x', 'True'), ('big/y', 'True')]


@pytest.mark.parametrize('model, directory', [(WIDE, 'shards'), (FLAT, '/')])
def test_directory_beyond_the_cap_fails_and_says_so(capped_hub, model, directory):
    _hub, api, commits = capped_hub
    with pytest.raises(HubError) as failed:
        api.list_files(model, commits[model])
    assert str(failed.value).startswith('directory %s of %s holds 3000 or more entries, more than the hub lists in one answer' % (
        directory, model))


def test_below_the_cap_one_listing_is_enough(capped_hub):
    hub, api, commits = capped_hub
    mark = len(hub.log)
    assert [f.path for f in api.list_files(SMALL, commits[SMALL])] == ['a/b.json', 'config.json']
    assert listings_since(hub, mark, 1, SMALL) == [('', 'True')]


def test_walk_refuses_a_file_listed_as_other_bytes_by_two_answers(capped_hub):
    """The cut listing and the re-listing of a directory overlap; where they disagree, neither can be trusted."""
    hub, api, commits = capped_hub
    hub.faults.add(action='wrong_sha', file='big/x/0000.json', times=1)  # only in the first, cut listing
    try:
        with pytest.raises(HubError, match='hub lists big/x/0000.json in o/nested twice, differently'):
            api.list_files(NESTED, commits[NESTED])
    finally:
        hub.faults.clear()
