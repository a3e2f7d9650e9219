"""failure: expected errors fail with their message alone, unexpected ones keep their traceback for -vvv."""

import pytest

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle.format import BundleError
from ansible_collections.modelseed.fleet.plugins.module_utils._module.failure import fail, failure


class Failed(Exception):
    pass


class Module:
    """What fail() needs of AnsibleModule: fail_json, which never returns."""

    def fail_json(self, **kwargs):
        raise Failed(kwargs)


def reported(cause, *details, result=None):
    with pytest.raises(Failed) as caught:
        fail(Module(), cause, result, *details)
    return caught.value.args[0]


def raised(exc):
    try:
        raise exc
    except Exception as caught:  # pylint: disable=broad-except
        return caught


def test_an_expected_error_is_its_message_alone():
    out = reported(raised(BundleError('SHA256SUMS is missing')), 'no model was changed', '', result={'changed': False})
    assert out == {'msg': 'SHA256SUMS is missing; no model was changed', 'changed': False}


def test_an_unexpected_error_keeps_its_traceback_and_may_be_described_better():
    cause = failure(raised(OSError(5, 'Input/output error')), 'installing into /c failed: Input/output error')
    out = reported(cause)
    assert out['msg'] == 'installing into /c failed: Input/output error'
    assert out['exception'].startswith('Traceback') and 'OSError: [Errno 5] Input/output error' in out['exception']
