"""How the integration tests judge a cache with a real SDK: offline, every file with the right bytes;
online, zero file downloads from the hub. Shared by the modelscope_model and cache_install tests."""

from __future__ import annotations

import hashlib

from support.sample_models import MODEL, model_files

SDK_METADATA = {".msc", ".mdl", ".mv"}
# The pinned SDK versions that read each layout as a cache hit.
READERS = {
    "hub": ("1.15.0",),
    "models": ("1.37.1", "1.40.2"),
    "snapshots": ("1.40.2",),
    "all": ("1.15.0", "1.37.1", "1.40.2"),
}


def expected(legacy: bool, files: dict[str, bytes] | None = None) -> dict[str, str]:
    """{path: sha256} an SDK must find; SDKs up to 1.37 skip .gitattributes in listings, so it is not insisted on."""
    files = dict(model_files() if files is None else files)
    if legacy:
        files.pop(".gitattributes", None)
    return {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}


def judge(sdk_env, cache, hub, tls, *, model: str = MODEL, files: dict[str, bytes] | None = None, user: str | None = None,
          online: bool = True, revision: str | None = None):
    """Offline: every file, right bytes. Online (unless ``online=False``): zero downloads. ``user`` runs the SDK as that user;
    ``revision``: the one asked for (the SDK's default otherwise)."""
    offline = sdk_env.snapshot(model, cache, hub, local_files_only=True, ca_bundle=tls.ca, user=user, revision=revision)
    assert offline.ok, offline.error or offline.stderr
    found = {path: info["sha256"] for path, info in offline.files.items() if path not in SDK_METADATA}
    want = expected(sdk_env.legacy, files)
    assert {p: found.get(p) for p in want} == want
    if online:
        mark = len(hub.log)
        result = sdk_env.snapshot(model, cache, hub, ca_bundle=tls.ca, user=user, revision=revision)
        assert result.ok, result.error or result.stderr
        assert hub.log.downloads(mark) == {}, hub.log.api_calls(mark)
    return offline
