"""Tree-form bundles: written with hard links from the cache, installed by copy, link or move, hostile trees refused."""

import functools
import hashlib
import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import writer as bw
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.check import check_bundle
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.install import ModelInstall
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.reader import Bundle, DirSource, UrlSource
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tree_reader import TreeBundle, TreePlacementError, open_bundle
from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.tree_writer import TreePlan
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.perms import Perms
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import prepare_state_dirs
from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpClient
from ansible_collections.modelseed.fleet.plugins.modules import cache_install
from support.recorded_cache import MTIME, entry_for, seed

FILES = {'config.json': b'{"a": 1}', 'weights/w.bin': b'w' * 70000, 'weights/sub/x.txt': b'x', 'empty': b''}
TREE = 'o--m--master'


def cache_with(tmp_path, mode=0o644):
    top = seed(tmp_path / 'c', 'models/o/m', FILES)
    for path in FILES:
        os.chmod(os.path.join(top, *path.split('/')), mode)
    # chmod changes no mtime: the record still matches
    return top


def write(tmp_path, form, name):
    dest = tmp_path / name
    dest.mkdir(exist_ok=True)
    plan = (TreePlan if form == 'tree' else bw.BundlePlan)(str(dest), [entry_for(tmp_path / 'c')])
    plan.apply()
    return dest, plan


def written(tmp_path, form, name):
    return write(tmp_path, form, name)[0]


def test_tree_has_the_tars_members_and_the_same_manifest(tmp_path):
    top = cache_with(tmp_path)
    tar_dest = written(tmp_path, 'tar', 'tar')
    tree_dest, plan = write(tmp_path, 'tree', 'tree')
    assert (tree_dest / 'manifest.json').read_bytes() == (tar_dest / 'manifest.json').read_bytes()
    sums = bundle_format.parse_sums((tree_dest / 'SHA256SUMS').read_bytes())
    assert sums == {'manifest.json': hashlib.sha256((tree_dest / 'manifest.json').read_bytes()).hexdigest()}
    model = bundle_format.parse_manifest((tree_dest / 'manifest.json').read_bytes())['models'][0]
    found = sorted(os.path.relpath(os.path.join(d, n), str(tree_dest / TREE))
                   for d, dirs, names in os.walk(str(tree_dest / TREE)) for n in dirs + names)
    assert found == [name for name, kind, size in bundle_format.tar_members(model)]
    assert sorted(os.listdir(str(tree_dest))) == ['SHA256SUMS', 'manifest.json', TREE]
    for path, data in FILES.items():
        st = os.lstat(str(tree_dest / TREE / path))
        assert (tree_dest / TREE / path).read_bytes() == data and stat.S_IMODE(st.st_mode) == 0o644
        # same file system, mode 0644: a hard link, not a copy
        assert st.st_ino == os.lstat(os.path.join(top, *path.split('/'))).st_ino
    assert plan.copied == 0
    for name, data in bundle_format.metadata_entries(model):
        st = os.lstat(str(tree_dest / TREE / name))
        assert (tree_dest / TREE / name).read_bytes() == data and st.st_mtime == MTIME and stat.S_IMODE(st.st_mode) == 0o644
    for rel in ('', 'weights', 'weights/sub'):
        st = os.lstat(str(tree_dest / TREE / rel))
        assert st.st_mtime == MTIME and stat.S_IMODE(st.st_mode) == 0o755
    again = TreePlan(str(tree_dest), [entry_for(tmp_path / 'c')])
    assert not again.changed and again.write == []


def test_files_of_another_mode_are_copied_with_the_commits_time_and_a_tar_bundle_switches_to_tree(tmp_path):
    top = cache_with(tmp_path, mode=0o640)
    dest = written(tmp_path, 'tar', 'b')
    dest, plan = write(tmp_path, 'tree', 'b')
    assert plan.reasons == {'model directory missing or incomplete': [('o/m', 'master')]} and plan.prune == ['o--m--master.tar']
    assert sorted(os.listdir(str(dest))) == ['SHA256SUMS', 'manifest.json', TREE]
    assert plan.copied == sum(len(d) for d in FILES.values())
    st = os.lstat(str(dest / TREE / 'weights/w.bin'))
    assert st.st_ino != os.lstat(os.path.join(top, 'weights', 'w.bin')).st_ino
    assert st.st_mtime == MTIME and stat.S_IMODE(st.st_mode) == 0o644
    # a member removed from the tree is noticed and the model's directory rebuilt whole
    os.unlink(str(dest / TREE / 'empty'))
    again = TreePlan(str(dest), [entry_for(tmp_path / 'c')])
    assert again.write and again.reason_list() == ['1 model(s) model directory missing or incomplete']
    again.apply()
    assert (dest / TREE / 'empty').exists() and not [n for n in os.listdir(str(dest)) if n.startswith('.')]
    # and back to tar: the tree directory goes
    dest, plan = write(tmp_path, 'tar', 'b')
    assert plan.prune == [TREE] and sorted(os.listdir(str(dest))) == ['SHA256SUMS', 'manifest.json', 'o--m--master.tar']


def tree_bundle(tmp_path, name='tree', **kwargs):
    cache_with(tmp_path)
    dest = written(tmp_path, 'tree', name)
    return dest


def install(tmp_path, dest, src_files, cache='cache'):
    root = str(tmp_path / cache)
    os.makedirs(root, exist_ok=True)
    prepare_state_dirs(root, Perms())
    bundle = open_bundle(DirSource(str(dest)), src_files)
    assert isinstance(bundle, TreeBundle)
    target = ModelInstall(root, 'all', bundle.models[0])
    target.decide()
    bundle.prepare(target.model, os.path.dirname(target.staging))
    target.stage(bundle)
    target.commit()
    return target


@pytest.mark.parametrize('src_files', ['copy', 'link', 'move'])
def test_install_by_copy_link_and_move(tmp_path, src_files):
    dest = tree_bundle(tmp_path)
    inodes = dict((p, os.lstat(str(dest / TREE / p)).st_ino) for p in FILES)
    target = install(tmp_path, dest, src_files)
    assert target.decide().action == 'none'
    for path, data in FILES.items():
        installed = os.path.join(target.dir, *path.split('/'))
        st = os.lstat(installed)
        assert open(installed, 'rb').read() == data and st.st_mtime == MTIME
        assert (st.st_ino == inodes[path]) == (src_files != 'copy')
        assert os.path.exists(str(dest / TREE / path)) == (src_files != 'move')
    assert sorted(os.listdir(os.path.join(target.root, '.modelseed', 'incoming'))) == []


def bad_tree(dest, case):
    top = dest / TREE
    if case == 'sha256 differs':
        (top / 'weights/w.bin').unlink()  # a hard link to the cache: write a new file
        (top / 'weights/w.bin').write_bytes(b'W' + b'w' * 69999)
    elif case == 'missing file':
        (top / 'weights/sub/x.txt').unlink()
    elif case == 'extra file':
        (top / 'weights/extra.bin').write_bytes(b'e')
    elif case == 'symlink':
        (top / 'config.json').unlink()
        (top / 'config.json').symlink_to('/etc/hostname')
    elif case == 'size differs':
        (top / 'empty').write_bytes(b'!')
    elif case == 'changed manifest':
        text = (dest / 'manifest.json').read_bytes().replace(b'"bytes": 70009', b'"bytes": 70010')
        assert text != (dest / 'manifest.json').read_bytes()
        (dest / 'manifest.json').write_bytes(text)


CASES = {'sha256 differs': "'weights/w.bin' .* has sha256", 'missing file': "missing from .*'weights/sub/x.txt'",
         'extra file': "holds 'weights/extra.bin', which is not in the manifest", 'symlink': "'config.json' .* is not a regular file",
         'size differs': "'empty' .* has 1 bytes, the manifest says 0", 'changed manifest': 'manifest.json has sha256'}


@pytest.mark.parametrize('src_files', ['copy', 'move'])
@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_trees_are_refused_and_nothing_changes(tmp_path, case, src_files):
    dest = tree_bundle(tmp_path)
    old = install(tmp_path, tree_bundle(tmp_path, 'first'), 'copy')
    before = snapshot(old.root)
    bad_tree(dest, case)
    tree_before = snapshot(str(dest))
    with pytest.raises(BundleError, match=CASES[case]):
        install(tmp_path, dest, src_files)
    after = snapshot(old.root)
    # the staging area may have held the model's files for a moment; it is empty again
    assert after.pop('.modelseed/incoming')[:2] == before.pop('.modelseed/incoming')[:2]
    assert after == before and not os.listdir(os.path.join(old.root, '.modelseed', 'incoming'))
    after = snapshot(str(dest))
    if case == 'sha256 differs' and src_files == 'move':
        # deleted, so that the transport sends it again; the rest stays (its directory has a new mtime)
        gone, parent = TREE + '/weights/w.bin', TREE + '/weights'
        assert after.pop(parent)[:2] == tree_before[parent][:2]
        assert after == dict((k, v) for k, v in tree_before.items() if k not in (gone, parent))
    else:
        assert after == tree_before


def snapshot(top):
    out = {}
    for directory, dirs, names in os.walk(top):
        for name in names + dirs:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            out[os.path.relpath(path, top)] = (st.st_ino, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


def test_link_or_move_from_another_file_system_fails_before_anything_changes(tmp_path):
    dest = tree_bundle(tmp_path)
    if not os.path.isdir('/dev/shm'):
        pytest.skip('no second file system')
    other = tempfile.mkdtemp(dir='/dev/shm')
    try:
        if os.stat(other).st_dev == os.stat(str(tmp_path)).st_dev:
            pytest.skip('/dev/shm is on the same file system')
        moved = os.path.join(other, 'tree')
        shutil.copytree(str(dest), moved)
        before = snapshot(moved)
        for src_files in ('link', 'move'):
            with pytest.raises(TreePlacementError, match='another file system than the cache.*src_files=copy'):
                install(tmp_path, moved, src_files)
            assert snapshot(moved) == before
        install(tmp_path, moved, 'copy')
    finally:
        shutil.rmtree(other)


def test_link_and_move_need_a_tree(tmp_path):
    cache_with(tmp_path)
    dest = written(tmp_path, 'tar', 'tars')
    assert isinstance(open_bundle(DirSource(str(dest))), Bundle)
    with pytest.raises(BundleError, match='src_files=move needs a bundle in tree form'):
        open_bundle(DirSource(str(dest)), 'move')


def test_check_bundle_reads_a_tree(tmp_path):
    dest = tree_bundle(tmp_path)
    assert check_bundle(str(dest))['verified'] and check_bundle(str(dest), 'full')['verified']
    bad_tree(dest, 'sha256 differs')
    assert check_bundle(str(dest))['verified']  # sizes alike: only a full check reads the files
    report = check_bundle(str(dest), 'full')
    assert not report['verified'] and 'has sha256' in report['models'][0]['problem']
    assert (dest / TREE / 'weights/w.bin').exists()  # a check deletes nothing
    bad_tree(dest, 'extra file')
    assert 'not in the manifest' in check_bundle(str(dest))['models'][0]['problem']


def test_a_tree_over_http_is_refused_with_the_reason(tmp_path):
    dest = tree_bundle(tmp_path)
    handler = functools.partial(QuietHandler, directory=str(dest))
    with http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = 'http://127.0.0.1:%d/' % server.server_port
            source = UrlSource(url, HttpClient(timeout=10, retries=0))
            with pytest.raises(BundleError, match='in tree form, which is read from a directory.*must hold tars'):
                open_bundle(source)
            # cache_install reads it over http(s) only to bring installed models in line: a model that needs its files
            # fails the task before the cache directory is made; one installed from the directory needs nothing more.
            fresh, installed = tmp_path / 'fresh', tmp_path / 'installed'
            refused = run_cache_install({'src': url, 'cache_dir': str(fresh), 'layout': 'all'}, tmp_path)
            assert run_cache_install({'src': str(dest), 'cache_dir': str(installed), 'layout': 'all'}, tmp_path)['changed']
            again = run_cache_install({'src': url, 'cache_dir': str(installed), 'layout': 'all'}, tmp_path)
        finally:
            server.shutdown()
    assert refused['failed'] and ('over http(s) it can only bring installed models in line, and the files of o/m@master are needed: '
                                  'the bundle must hold tars') in refused['msg'], refused
    assert not fresh.exists()
    assert not again.get('failed') and not again['changed'] and again['idle'], again


def run_cache_install(args, tmp_path):
    """The module as Ansible runs it on a node: its arguments in a JSON file."""
    args_file = tmp_path / 'args.json'
    args_file.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': args}))
    proc = subprocess.run([sys.executable, cache_install.__file__, str(args_file)], capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    return json.loads(proc.stdout)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_top_files_are_the_manifest_the_sums_and_the_signatures(tmp_path):
    dest = tree_bundle(tmp_path)
    (dest / 'manifest.json.sig').write_bytes(b'signature')
    (dest / 'o--m--master.sig').write_bytes(b'model signature')
    top = bundle_format.top_files(str(dest))
    # The models' directories and anything else at the top stay out.
    assert sorted(top) == ['SHA256SUMS', 'manifest.json', 'manifest.json.sig', 'o--m--master.sig']
    assert top['manifest.json.sig'] == hashlib.sha256(b'signature').hexdigest()
    assert top['manifest.json'] == hashlib.sha256((dest / 'manifest.json').read_bytes()).hexdigest()
