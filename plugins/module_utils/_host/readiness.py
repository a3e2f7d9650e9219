# Copyright: (c) modelseed.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ask a host's own modelscope SDK, offline, whether it loads each model from the cache.

One Python process per interpreter loads every model with ``local_files_only=True``,
which makes no request in any SDK generation, and prints one JSON line per model.
"""


import json
import os
import pwd
import shutil
import subprocess

from ansible_collections.modelseed.fleet.plugins.module_utils._cache.layouts import absolute, model_dir
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.sdk_metadata import METADATA_FILES

MARK = 'MODELSEED-READY '
# Runs in the SDK's interpreter, which may be any Python 3: keep it plain.
PROBE = r'''
import json, os, sys
MARK = %r
models = json.loads(sys.argv[1])
try:
    import modelscope
    from modelscope.hub.snapshot_download import snapshot_download
except Exception as exc:
    print(MARK + json.dumps({"error": "cannot import the SDK: %%s: %%s" %% (type(exc).__name__, exc)}))
    sys.exit(0)
print(MARK + json.dumps({"version": getattr(modelscope, "__version__", None)}))
for model in models:
    try:
        path = str(snapshot_download(model["id"], revision=model["revision"], local_files_only=True))
        missing = [p for p in model["files"] if not os.path.isfile(os.path.join(path, p))]
        error = "missing %%s" %% ", ".join(missing[:5]) if missing else None
    except Exception as exc:
        path, error = None, "%%s: %%s" %% (type(exc).__name__, exc)
    sys.stdout.flush()
    print(MARK + json.dumps({"id": model["id"], "path": path, "error": error}))
''' % MARK


def run_probe(python, models, environment, user=None, timeout=300):
    """{'python', 'version', 'ready', 'models': [{id, path, ok, error}], 'error'} for one interpreter.

    ``models``: [{'id', 'revision', 'files': [paths expected in the returned directory]}].
    ``environment``: the full environment of the process (the node's, plus overrides).
    ``user``: run as this user (the runtime user), with its groups and home.
    """
    failed = {'python': python, 'version': None, 'ready': False, 'models': []}
    env = dict(environment)
    command = [python, '-c', PROBE, json.dumps(models)]
    preexec = None
    if user is not None:
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            return dict(failed, error='no such user %s' % user)
        env.setdefault('HOME', account.pw_dir)
        env['USER'] = env['LOGNAME'] = user
        preexec = _drop_to(account)
    try:
        proc = subprocess.run(command, env=env, capture_output=True, timeout=timeout,
                              preexec_fn=preexec, check=False, cwd='/')
    except (OSError, subprocess.TimeoutExpired) as exc:
        return dict(failed, error='cannot run %s%s: %s' % (python, ' as %s' % user if user else '', exc))
    return parse(python, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace'), models)


def _drop_to(account):
    def switch():
        os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
    return switch


def parse(python, stdout, stderr, models):
    report = {'python': python, 'version': None, 'models': [], 'error': None}
    for line in stdout.splitlines():
        if not line.startswith(MARK):
            continue
        item = json.loads(line[len(MARK):])
        if 'id' in item:
            report['models'].append({'id': item['id'], 'path': item['path'], 'ok': item['error'] is None, 'error': item['error']})
        else:
            report['version'] = item.get('version')
            report['error'] = item.get('error')
    answered = set(m['id'] for m in report['models'])
    for model in models:
        if model['id'] not in answered:
            report['models'].append({'id': model['id'], 'path': None, 'ok': False,
                                     'error': 'no answer: %s' % (stderr.strip().splitlines() or ['?'])[-1]})
    report['ready'] = report['error'] is None and all(m['ok'] for m in report['models'])
    return report


def legacy_dirs(cache, model_id):
    """Directories where an SDK up to 1.37 looks for (and, on a miss, creates) a model."""
    return [absolute(cache, model_dir(layout, model_id, None)) for layout in ('models', 'hub')]


def remove_stray_dirs(before, candidates):
    """Remove directories among ``candidates`` that did not exist ``before`` and hold only SDK metadata.

    An SDK up to 1.37 that misses a model offline leaves ``models/<owner>/<escaped>/.mdl``
    behind, and SDK 1.38 and later prefer any non-empty directory there over their own
    snapshots: one failed probe would hide the model from every newer SDK.
    """
    removed = []
    for path in candidates:
        if path in before or os.path.islink(path) or not os.path.isdir(path):
            continue
        if set(os.listdir(path)) <= set(METADATA_FILES):
            shutil.rmtree(path)
            removed.append(path)
    return removed
