# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs shared by the modules that talk to a hub or write a cache."""

import os
from urllib.parse import urlsplit

from ansible.module_utils.basic import env_fallback

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import LAYOUT_CHOICES, layout_for_versions
from ansible_collections.modelseed.fleet.plugins.module_utils._host.sdk_detect import find_sdks

# Every module that makes HTTP requests (doc fragment modelseed.fleet.transfer); retry_delay is the client's backoff.
TRANSFER_ARG_SPEC = dict(
    timeout=dict(type='float', default=60.0),
    retries=dict(type='int', default=5),
    retry_delay=dict(type='float', default=1.0),
)

# The hub's address and credentials (doc fragment modelseed.fleet.hub), with TRANSFER_ARG_SPEC.
HUB_ARG_SPEC = dict(
    endpoint=dict(type='str'),
    token=dict(type='str', no_log=True, fallback=(env_fallback, ['MODELSCOPE_API_TOKEN'])),
    validate_certs=dict(type='bool', default=True),
    ca_path=dict(type='path'),
    **TRANSFER_ARG_SPEC
)

# One model at one revision, as the modules that take a list of models take each of them.
MODEL_REF_SPEC = dict(
    name=dict(type='str', required=True, aliases=['model_id']),
    revision=dict(type='str', default='master'),
)

# How thoroughly the files already in a cache are checked (cache_install, cache_info).
VERIFY_CHOICES = ['quick', 'full']

# Every module that writes models into a cache (doc fragment modelseed.fleet.sync).
SYNC_ARG_SPEC = dict(
    sync=dict(type='bool', default=True),
)

# Every module that writes models into a cache (doc fragment modelseed.fleet.layout).
LAYOUT_ARG_SPEC = dict(
    layout=dict(type='str', default='auto', choices=list(LAYOUT_CHOICES)),
    sdk_pythons=dict(type='list', elements='path', default=[]),
)


def choose_layout(module, result):
    """The ``layout`` option; for ``auto``, what the SDKs in ``sdk_pythons`` read (recorded in ``result``)."""
    if module.params['layout'] != 'auto':
        return module.params['layout']
    found = find_sdks(module.params['sdk_pythons'])
    result['sdks_found'] = found
    return layout_for_versions([sdk['version'] for sdk in found])


def cache_root(module):
    """``cache_dir``, else MODELSCOPE_CACHE on the host; refuses '/' and non-directories."""
    path = module.params.get('cache_dir') or os.environ.get('MODELSCOPE_CACHE')
    if not path:
        module.fail_json(msg='cache_dir is not set and MODELSCOPE_CACHE is not set on %s' % (os.uname()[1],))
    path = os.path.abspath(os.path.expanduser(path))
    if path == '/':
        module.fail_json(msg='cache_dir must not be the root directory')
    if os.path.exists(path) and not os.path.isdir(path):
        module.fail_json(msg='cache_dir %s exists and is not a directory' % path)
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        module.fail_json(msg='cache_dir %s cannot be created: %s is not a directory' % (path, parent))
    return path


def warn_unverified(module, url):
    """validate_certs=false is the task's choice, never a silent one: each run names the server left unchecked."""
    if not module.params['validate_certs'] and url.lower().startswith('https://'):
        module.warn('validate_certs is false: the TLS certificate of %s is not verified' % urlsplit(url).netloc)
