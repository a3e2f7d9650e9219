# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the modules fail: a message that says what happened, and for an unexpected cause its traceback.

An expected error (a ModelseedError: a bad bundle, a hub that refuses, a full disk) is a message that says
everything; it is reported like any task's failure, without a traceback. Any other error (an OSError, say) keeps
its traceback in the result's ``exception``: ansible-core before 2.19 prints it with ``-vvv``, 2.19 and later
with ``ANSIBLE_DISPLAY_TRACEBACK=error``.
"""


import traceback
from collections import namedtuple

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError


class Failure(namedtuple('Failure', ['msg', 'traceback'])):
    """A failure to report once the module has cleaned up: the task's message and, if unexpected, its traceback."""


def failure(exc, msg=None):
    """The Failure an error causes; its message is the error's text unless ``msg`` says it better."""
    trace = None if isinstance(exc, ModelseedError) else ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Failure(str(exc) if msg is None else msg, trace)


def fail(module, cause, result=None, *details):
    """Fail the task with ``cause`` (a Failure or an exception) and the non-empty ``details`` appended to its message."""
    if not isinstance(cause, Failure):
        cause = failure(cause)
    msg = '; '.join(part for part in (cause.msg,) + details if part)
    extra = dict(exception=cause.traceback) if cause.traceback else {}
    extra.update(result or {})
    module.fail_json(msg=msg, **extra)
