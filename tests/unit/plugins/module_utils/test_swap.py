"""swap: pruning and hard-linking a staged directory, the directory swap, pending records, the trash."""

import errno
import os

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._cache import state
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import Record
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import ModelState, empty_trash, recover_pending, state_path, trash_path
from ansible_collections.modelseed.fleet.plugins.module_utils._fs import tree
from ansible_collections.modelseed.fleet.plugins.module_utils._fs.tree import link_tree, prune_tree, replace_dir

REL = 'models/o/m'


def write(path, data=b'x'):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), 'wb') as handle:
        handle.write(data)


def files_below(top):
    """Relative paths of every file and link below ``top`` (links not followed)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(str(top)):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in filenames + links:
            found.add(os.path.relpath(os.path.join(dirpath, name), str(top)))
    return found


def dirs_below(top):
    return {os.path.relpath(os.path.join(dirpath, d), str(top))
            for dirpath, dirnames, _names in os.walk(str(top)) for d in dirnames
            if not os.path.islink(os.path.join(dirpath, d))}


# -- prune_tree ----------------------------------------------------------------

def test_prune_keeps_only_listed_paths_and_removes_emptied_dirs(tmp_path):
    top = tmp_path / 'staged'
    for rel in ('a.bin', 'sub/b.txt', 'sub/old.txt', 'gone/deeper/c.txt', 'gone/d.txt'):
        write(top / rel)
    (top / 'empty').mkdir()
    prune_tree(str(top), {'a.bin', 'sub/b.txt'})
    assert files_below(top) == {'a.bin', 'sub/b.txt'}
    assert dirs_below(top) == {'sub'}
    assert top.is_dir()  # the top itself stays, even when nothing is kept
    prune_tree(str(top), set())
    assert top.is_dir() and not os.listdir(str(top))


def test_prune_removes_links_it_does_not_keep_without_following_them(tmp_path):
    top = tmp_path / 'staged'
    write(top / 'sub/b.txt', b'b')
    (top / 'to-file').symlink_to('sub/b.txt')
    (top / 'to-dir').symlink_to('sub')
    (top / 'kept-link').symlink_to('sub/b.txt')
    (top / 'dangling').symlink_to('nowhere')
    prune_tree(str(top), {'sub/b.txt', 'kept-link'})
    assert files_below(top) == {'sub/b.txt', 'kept-link'}
    assert (top / 'sub/b.txt').read_bytes() == b'b'  # the link to its directory went, not the directory's files
    assert os.readlink(str(top / 'kept-link')) == 'sub/b.txt'


# -- link_tree -----------------------------------------------------------------

def test_link_tree_completes_the_staged_dir_with_hard_links(tmp_path):
    old, new = tmp_path / 'old', tmp_path / 'new'
    write(old / 'same.bin', b'same')
    write(old / 'changed.bin', b'old version')
    write(old / 'sub/deep/c.txt', b'c')
    (old / 'alias').symlink_to('same.bin')
    (old / 'dir-alias').symlink_to('sub')
    (old / 'dangling').symlink_to('nowhere')
    os.chmod(str(old / 'sub'), 0o750)
    os.chmod(str(old / 'sub/deep'), 0o701)
    os.chmod(str(old), 0o711)
    write(new / 'changed.bin', b'new version')
    write(new / 'added.bin', b'added')
    link_tree(str(old), str(new), {'changed.bin', 'added.bin'})
    assert files_below(new) == {'same.bin', 'changed.bin', 'added.bin', 'sub/deep/c.txt', 'alias', 'dir-alias', 'dangling'}
    for rel in ('same.bin', 'sub/deep/c.txt'):
        assert os.stat(str(new / rel)).st_ino == os.stat(str(old / rel)).st_ino, rel
    # What the new content has is not replaced by the old.
    assert (new / 'changed.bin').read_bytes() == b'new version'
    assert os.stat(str(new / 'changed.bin')).st_ino != os.stat(str(old / 'changed.bin')).st_ino
    # Links stay links (the same ones), pointing where they did; a link to a directory is not descended.
    for rel, target in (('alias', 'same.bin'), ('dir-alias', 'sub'), ('dangling', 'nowhere')):
        assert os.readlink(str(new / rel)) == target
        assert os.lstat(str(new / rel)).st_ino == os.lstat(str(old / rel)).st_ino
    assert dirs_below(new) == {'sub', 'sub/deep'}
    for rel, mode in (('.', 0o711), ('sub', 0o750), ('sub/deep', 0o701)):
        assert os.stat(str(new / rel)).st_mode & 0o7777 == mode, rel


def test_link_tree_when_files_and_directories_trade_names(tmp_path):
    old, new = tmp_path / 'old', tmp_path / 'new'
    write(old / 'was-dir/inner.txt', b'inner')
    write(old / 'was-file', b'file')
    write(old / 'kept.txt', b'k')
    # The new content has a file where a directory was, and a directory where a file was.
    write(new / 'was-dir', b'now a file')
    write(new / 'was-file/inside.txt', b'now a directory')
    link_tree(str(old), str(new), {'was-dir', 'was-file/inside.txt'})
    assert files_below(new) == {'was-dir', 'was-file/inside.txt', 'kept.txt'}
    assert (new / 'was-dir').read_bytes() == b'now a file'
    assert (new / 'was-file/inside.txt').read_bytes() == b'now a directory'
    assert (old / 'was-dir/inner.txt').read_bytes() == b'inner'  # the old copy is left as it was


def test_link_tree_raises_where_hard_links_cannot_be_made(tmp_path, monkeypatch):
    old, new = tmp_path / 'old', tmp_path / 'new'
    write(old / 'a.bin')
    write(old / 'sub/b.bin')
    write(new / 'changed.bin')

    def refuse(*args, **kwargs):
        raise OSError(errno.EPERM, 'Operation not permitted')

    monkeypatch.setattr(tree.os, 'link', refuse)
    with pytest.raises(OSError) as raised:
        link_tree(str(old), str(new), {'changed.bin'})
    assert raised.value.errno == errno.EPERM
    monkeypatch.undo()
    # What the caller does then: prune back to the new files alone, and the old copy is untouched.
    prune_tree(str(new), {'changed.bin'})
    assert files_below(new) == {'changed.bin'}
    assert files_below(old) == {'a.bin', 'sub/b.bin'}


# -- replace_dir ---------------------------------------------------------------

def model_pair(tmp_path):
    new, old = tmp_path / 'cache/.modelseed/incoming/m', tmp_path / 'cache/models/o/m'
    write(new / 'marker', b'new')
    write(old / 'marker', b'old')
    return str(new), str(old)


def test_replace_dir_exchanges_in_one_step(tmp_path):
    new, old = model_pair(tmp_path)
    if not tree.exchange(new, old) or not tree.exchange(new, old):  # swapped there and back: where we were
        pytest.skip('this filesystem cannot exchange directories')
    new_ino = os.stat(new).st_ino
    aside = str(tmp_path / 'cache/.modelseed/trash/aside')
    assert replace_dir(new, old, aside) == new
    assert os.stat(old).st_ino == new_ino
    with open(os.path.join(old, 'marker'), 'rb') as handle:
        assert handle.read() == b'new'
    with open(os.path.join(new, 'marker'), 'rb') as handle:
        assert handle.read() == b'old'  # the previous copy is under the new one's former name
    assert not os.path.lexists(aside)


def test_replace_dir_renames_aside_where_the_kernel_cannot_exchange(tmp_path, monkeypatch):
    monkeypatch.setattr(tree, 'exchange', lambda first, second: False)
    new, old = model_pair(tmp_path)
    new_ino = os.stat(new).st_ino
    aside = str(tmp_path / 'cache/.modelseed/trash/aside')
    assert replace_dir(new, old, aside) == aside
    assert os.stat(old).st_ino == new_ino and not os.path.lexists(new)
    with open(os.path.join(aside, 'marker'), 'rb') as handle:
        assert handle.read() == b'old'


def test_replace_dir_with_nothing_to_replace(tmp_path):
    new, old = model_pair(tmp_path)
    os.rename(old, old + '.elsewhere')
    new_ino = os.stat(new).st_ino
    assert replace_dir(new, old, str(tmp_path / 'aside')) is None
    assert os.stat(old).st_ino == new_ino and not os.path.lexists(new)


# -- recover_pending -----------------------------------------------------------

def killed_update(tmp_path):
    """A cache where an update saved its pending record and was killed: (root, staging, model dir)."""
    root = str(tmp_path / 'cache')
    model, staging = os.path.join(root, REL), state_path(root, 'incoming', REL)
    write(os.path.join(model, 'w.bin'), b'old')
    write(os.path.join(staging, 'w.bin'), b'new')
    staged = Record(state_path(root, 'incoming', REL, '.json'))
    staged.put('w.bin', 3, 'ab' * 32, 'c1', os.lstat(os.path.join(staging, 'w.bin')))
    staged.save()
    ModelState(root, 'models', 'o/m', 'master').seal([('w.bin', 3, 'ab' * 32, 'c1')], dict(path=REL, commit='c1'))
    return root, staging, model


def swap_by_hand(first, second):
    """What RENAME_EXCHANGE does, in three renames (the test needs the outcome, not the atomicity)."""
    os.rename(first, first + '.swap')
    os.rename(second, first)
    os.rename(first + '.swap', second)


def state_files(root, kind):
    top = os.path.join(root, '.modelseed', kind)
    return sorted(os.listdir(top)) if os.path.isdir(top) else []


def test_recover_promotes_the_pending_record_of_a_swap_that_happened(tmp_path):
    root, staging, model = killed_update(tmp_path)
    swap_by_hand(staging, model)
    assert recover_pending(root, REL, keep_unswapped=True)
    record = Record.load(state_path(root, 'records', REL, '.json'))
    assert record.data['commit'] == 'c1' and record.data['dir_ino'] == os.stat(model).st_ino
    assert record.files['w.bin']['sha256'] == 'ab' * 32
    with open(os.path.join(model, 'w.bin'), 'rb') as handle:
        assert handle.read() == b'new'
    # The staging dir held the old copy: gone, with its record and the pending record.
    assert state_files(root, 'incoming') == [] and state_files(root, 'trash') == []


@pytest.mark.parametrize('model_dir_missing', [False, True])
def test_recover_keeps_verified_staged_files_when_the_swap_did_not_happen(tmp_path, model_dir_missing):
    root, staging, model = killed_update(tmp_path)
    if model_dir_missing:  # killed between the two renames where the kernel cannot exchange
        os.rename(model, os.path.join(root, 'aside'))
    assert not recover_pending(root, REL, keep_unswapped=True)
    assert not os.path.exists(state_path(root, 'records', REL, '.json'))
    assert not os.path.exists(state_path(root, 'incoming', REL, state.PENDING_SUFFIX))
    # The staged file and its record stay, for the next attempt to use without a download.
    assert state_files(root, 'incoming') == sorted([os.path.basename(staging), os.path.basename(staging) + '.json'])
    with open(os.path.join(staging, 'w.bin'), 'rb') as handle:
        assert handle.read() == b'new'
    if not model_dir_missing:
        with open(os.path.join(model, 'w.bin'), 'rb') as handle:
            assert handle.read() == b'old'


def test_recover_without_keeping_drops_the_staging_dir_too(tmp_path):
    root, _staging, model = killed_update(tmp_path)
    assert not recover_pending(root, REL, keep_unswapped=False)
    assert state_files(root, 'incoming') == [] and state_files(root, 'trash') == []
    assert not os.path.exists(state_path(root, 'records', REL, '.json'))
    with open(os.path.join(model, 'w.bin'), 'rb') as handle:
        assert handle.read() == b'old'


def test_a_pending_record_for_another_path_is_not_promoted(tmp_path):
    root, staging, model = killed_update(tmp_path)
    pending_path = state_path(root, 'incoming', REL, state.PENDING_SUFFIX)
    pending = Record.load(pending_path)
    pending.save(path='models/o/other')
    swap_by_hand(staging, model)
    assert not recover_pending(root, REL)
    assert not os.path.exists(state_path(root, 'records', REL, '.json'))


# -- empty_trash ---------------------------------------------------------------

def test_empty_trash_of_one_model_leaves_the_others(tmp_path):
    root = str(tmp_path / 'cache')
    mine = [trash_path(root, REL), trash_path(root, REL)]
    # 'o/m' is a prefix of 'o/m2' and of the revision 'o/m.0' (snapshots layout): neither is its trash
    others = [trash_path(root, 'models/o/other'), trash_path(root, 'models/o/m2'), trash_path(root, REL + '.0')]
    for path in [mine[0]] + others:
        write(os.path.join(path, 'sub/f.bin'))
    write(mine[1])  # a file, not a directory, is emptied as well
    empty_trash(root, REL)
    assert sorted(os.path.join(root, '.modelseed/trash', n) for n in state_files(root, 'trash')) == sorted(others)
    empty_trash(root)
    assert state_files(root, 'trash') == []
    empty_trash(str(tmp_path / 'no-cache-here'))  # nothing to do is no error
