"""A cache whose models carry the record modelscope_model writes, without a hub: what cache_bundle reads."""

import hashlib
import os

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import writer as bw
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.records import Record
from ansible_collections.modelseed.fleet.plugins.module_utils._cache.state import state_path

MTIME = 1700000000


def seed(root, rel, files, model_id='o/m', revision='master', layout='models', commit='c' * 40, created_at=MTIME):
    """A model directory plus the record modelscope_model would have written for it."""
    top = os.path.join(str(root), *rel.split('/'))
    record = Record(state_path(str(root), 'records', rel, '.json'))
    for path, data in files.items():
        target = os.path.join(top, *path.split('/'))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, 'wb') as handle:
            handle.write(data)
        record.put(path, len(data), hashlib.sha256(data).hexdigest(), 'r-' + path[:4], os.stat(target))
    record.save(model=model_id, revision=revision, commit=commit, created_at=created_at, layout=layout, path=rel)
    return top


def entry_for(root, model_id='o/m', revision='master', layout='auto'):
    source = bw.find_source(str(root), model_id, revision, layout)
    return bw.manifest_entry(model_id, revision, source), source
