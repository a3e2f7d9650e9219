# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Model ids and revisions: validation and the escaping SDKs apply to names."""

import re

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError

# ModelScope owners and names: letters, digits, '-', '_', '.'; never a dot first,
# so '.' and '..' can never become path components.
_PART = r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}'
_MODEL_ID = re.compile(r'^(%s)/(%s)\Z' % (_PART, _PART))
# Branches, tags and commit ids. One path component (the >= 1.38 layout uses the
# revision as a directory name), so no '/'.
_REVISION = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}\Z')
_COMMIT = re.compile(r'^[0-9a-f]{7,64}\Z')


class InvalidName(ModelseedError, ValueError):
    pass


def split_model_id(model_id):
    """Return (owner, name) or raise InvalidName with a message for the user."""
    # Manifests are JSON: a number or a list where a name belongs is refused, not a crash.
    match = _MODEL_ID.match(model_id) if isinstance(model_id, str) else None
    if not match or '..' in model_id:
        raise InvalidName(
            "invalid model id %r: expected 'owner/name' made of letters, digits, "
            "'-', '_' and '.', not starting with a dot" % (model_id,))
    return match.group(1), match.group(2)


def check_revision(revision):
    if not isinstance(revision, str) or not _REVISION.match(revision) or '..' in revision:
        raise InvalidName(
            "invalid revision %r: expected a branch, tag or commit id made of letters, "
            "digits, '-', '_', '+' and '.'" % (revision,))
    return revision


def looks_like_commit(revision):
    return bool(_COMMIT.match(revision))


def escape_name(name):
    """The directory name SDKs 1.15 - 1.37 use for a repo name."""
    return name.replace('.', '___')
