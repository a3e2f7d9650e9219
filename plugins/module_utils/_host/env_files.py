# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files that give every session and service of a host the same environment variables.

- ``/etc/environment``: read by pam_env for every login (ssh, console, su -l); plain
  ``KEY=value`` lines, which this module edits in place, keeping everything else.
- ``/etc/profile.d/<name>.sh``: for shells that bypass PAM (``bash -l`` in a container).
- ``/etc/systemd/system.conf.d/<name>.conf``: ``DefaultEnvironment=`` for every system service.
- ``/etc/systemd/system/<unit>.d/<name>.conf``: ``Environment=`` for named services.
"""


import re

from ansible_collections.modelseed.fleet.plugins.module_utils._fs.errors import ModelseedError

_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*\Z')
_UNIT = re.compile(r'^[A-Za-z0-9:_.@-]+\.(service|socket|target|timer|path|mount|scope|slice)\Z')
HEADER = '# Managed by modelseed.fleet: the same ModelScope settings in every session and service.\n'


class EnvError(ModelseedError, ValueError):
    pass


def check_variables(variables):
    for name, value in variables.items():
        if not _NAME.match(name):
            raise EnvError('%r is not a valid environment variable name' % (name,))
        if any(c in value for c in '\n\r\0"\\'):
            raise EnvError('the value of %s must not contain newlines, quotes or backslashes' % name)
    return variables


def unit_name(unit):
    """``vllm`` -> ``vllm.service``; refuse names that could leave /etc/systemd/system."""
    name = unit if '.' in unit else unit + '.service'
    if not _UNIT.match(name):
        raise EnvError('%r is not a systemd unit name' % (unit,))
    return name


def _parse_line(line):
    """(name, value) of a ``KEY=value`` line of /etc/environment, else None."""
    stripped = line.strip()
    if not stripped or stripped.startswith('#') or '=' not in stripped:
        return None
    name, value = stripped.split('=', 1)
    name = name.strip()
    if name.startswith('export '):
        name = name[len('export '):].strip()
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
        value = value[1:-1]
    return name, value


def _env_line(name, value):
    return '%s="%s"\n' % (name, value) if re.search(r'\s', value) else '%s=%s\n' % (name, value)


def edit_environment(text, variables, remove=False):
    """New /etc/environment text and {name: old value} of the settings that differed.

    Each variable ends up on exactly one line (duplicates go), at the place of its
    first line, or appended; every other line is kept as it was.
    """
    out, seen, previous = [], set(), {}
    for line in text.splitlines(True):
        parsed = _parse_line(line)
        if parsed and parsed[0] in variables:
            name, value = parsed
            if value != variables[name] and name not in previous:
                previous[name] = value
            if name not in seen and not remove:
                out.append(_env_line(name, variables[name]))
            seen.add(name)
            continue
        out.append(line if line.endswith('\n') else line + '\n')
    if not remove:
        out.extend(_env_line(name, variables[name]) for name in sorted(variables) if name not in seen)
    return ''.join(out), previous


def current_values(text):
    """{name: value} as /etc/environment sets them (the last line of a name wins, as in pam_env)."""
    found = {}
    for line in text.splitlines():
        parsed = _parse_line(line)
        if parsed:
            found[parsed[0]] = parsed[1]
    return found


def profile_script(variables):
    return HEADER + ''.join("export %s='%s'\n" % (name, variables[name]) for name in sorted(variables))


def systemd_manager_dropin(variables):
    pairs = ' '.join('"%s=%s"' % (name, variables[name]) for name in sorted(variables))
    return HEADER + '[Manager]\nDefaultEnvironment=%s\n' % pairs


def systemd_service_dropin(variables):
    return HEADER + '[Service]\n' + ''.join('Environment="%s=%s"\n' % (name, variables[name]) for name in sorted(variables))
