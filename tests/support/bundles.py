"""Write bundles as ``plugins/module_utils/_bundle/format.py`` defines them: valid ones from a dict of files,
and hostile ones (links, devices, traversal, lies about sizes and hashes) whose manifest and SHA256SUMS
agree with the tar, so that what is tested is the installer's judgement of the tar itself.

    spec = ModelSpec("o/m", {"config.json": b"{}", "w/model.bin": data})
    write_bundle(tmp_path / "bundle", [spec])

    evil = raw_tar([Member("config.json", data=b"{}"), Member("x", kind="symlink", linkname="/etc")])
    write_bundle(tmp_path / "evil", [spec], tars={"o/m": evil})
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ansible_collections.modelseed.fleet.plugins.module_utils._bundle import format as bundle_format

CREATED_AT = 1700000000


@dataclass
class ModelSpec:
    """One model of a bundle: its files and the facts the manifest records about them."""

    id: str
    files: Mapping[str, bytes]
    revision: str = "master"
    commit: str | None = None  # default: derived from the files
    created_at: int = CREATED_AT
    file_revisions: Mapping[str, str] = field(default_factory=dict)  # default: the commit

    def resolved_commit(self) -> str:
        if self.commit:
            return self.commit
        digest = hashlib.sha1()
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + hashlib.sha256(self.files[path]).digest())
        return digest.hexdigest()

    def entry(self) -> dict:
        """The manifest's model entry, without the tar fields."""
        commit = self.resolved_commit()
        files = [{"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                  "revision": self.file_revisions.get(path, commit)} for path, data in sorted(self.files.items())]
        entry = {"id": self.id, "revision": self.revision, "commit": commit, "created_at": self.created_at, "source_layout": "models",
                 "tar": bundle_format.tar_name(self.id, self.revision), "files": files, "bytes": sum(f["size"] for f in files)}
        entry["metadata"] = bundle_format.metadata_list(entry)
        return entry


@dataclass
class Member:
    """A tar member, honest or not. ``size`` overrides the header's size (data is written as given)."""

    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, chr, blk, fifo
    data: bytes = b""
    linkname: str = ""
    size: int | None = None
    mode: int | None = None
    mtime: int = CREATED_AT


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
          "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}


def raw_tar(members: Iterable[Member], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """Tar bytes holding ``members`` in the given order, with owner 0 and empty owner names."""
    members = list(members)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _TYPES[m.kind]
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = m.mtime
            info.mode = m.mode if m.mode is not None else (bundle_format.DIR_MODE if m.kind == "dir" else bundle_format.FILE_MODE)
            info.linkname = m.linkname
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    data = out.getvalue()
    for m in members:
        if m.size is not None:
            data = _patch_size(data, m.name, m.size)
    return data


def _patch_size(data: bytes, name: str, size: int) -> bytes:
    """Rewrite the size field (and checksum) of the header of ``name``."""
    buf = bytearray(data)
    pos = 0
    while pos + 512 <= len(buf):
        block = bytes(buf[pos:pos + 512])
        if block == bytes(512):
            break
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        if info.name.rstrip("/") == name:
            buf[pos + 124:pos + 136] = b"%011o\0" % size
            buf[pos + 148:pos + 156] = b"        "
            buf[pos + 148:pos + 156] = b"%06o\0 " % sum(buf[pos:pos + 512])
            return bytes(buf)
        pos += 512 + (info.size + 511) // 512 * 512
    raise KeyError(name)


def members_of(spec: ModelSpec) -> list[Member]:
    """The members an honest writer puts in a model's tar (``bundle_format.tar_members``), in order."""
    entry = spec.entry()
    metadata = dict(bundle_format.metadata_entries(entry))
    members = []
    for name, kind, _size in bundle_format.tar_members(entry):
        if kind == "dir":
            members.append(Member(name, kind="dir", mtime=spec.created_at))
        else:
            members.append(Member(name, data=metadata[name] if kind == "metadata" else spec.files[name], mtime=spec.created_at))
    return members


def model_tar(spec: ModelSpec) -> bytes:
    return raw_tar(members_of(spec))


def write_bundle(
    directory: Path | str,
    specs: Iterable[ModelSpec],
    *,
    tars: Mapping[str, bytes] | None = None,
    patch_model: Callable[[dict], None] | None = None,
    manifest: bytes | None = None,
    sums: bytes | None = None,
) -> Path:
    """Write manifest.json, SHA256SUMS and one tar per model into ``directory``.

    ``tars`` replaces the tar of a model id with given bytes; the manifest and SHA256SUMS then describe
    those bytes. ``patch_model`` may change each manifest entry before it is written (lie about a file);
    ``manifest``/``sums`` replace those files outright.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries, sum_entries = [], []
    for spec in specs:
        data = (tars or {}).get(spec.id)
        if data is None:
            data = model_tar(spec)
        entry = spec.entry()
        digest = hashlib.sha256(data).hexdigest()
        entry.update(tar_size=len(data), tar_sha256=digest)
        if patch_model:
            patch_model(entry)
        (directory / entry["tar"]).write_bytes(data)
        entries.append(entry)
        sum_entries.append((digest, entry["tar"]))
    manifest_data = manifest if manifest is not None else bundle_format.manifest_bytes(entries)
    (directory / bundle_format.MANIFEST).write_bytes(manifest_data)
    sum_entries.append((hashlib.sha256(manifest_data).hexdigest(), bundle_format.MANIFEST))
    (directory / bundle_format.SUMS).write_bytes(sums if sums is not None else bundle_format.sums_bytes(sum_entries))
    return directory


def read_manifest(directory: Path | str) -> dict:
    return json.loads((Path(directory) / bundle_format.MANIFEST).read_text())


def with_files(spec: ModelSpec, changes: Mapping[str, bytes | None], **facts) -> ModelSpec:
    """A copy of ``spec`` with files added, changed (bytes) or removed (None), and other facts."""
    files = dict(spec.files)
    for path, data in changes.items():
        if data is None:
            files.pop(path, None)
        else:
            files[path] = data
    facts.setdefault("commit", None)  # a new commit unless told otherwise
    return replace(spec, files=files, **facts)


def spec_from_hub(endpoint: str, model_id: str, files: Mapping[str, bytes], *, revision: str = "master",
                  ca_path: str | None = None) -> ModelSpec:
    """A ModelSpec whose commit, time and per-file revisions are those the hub lists, so that SDKs
    judging the installed cache against that hub see what they would have downloaded."""
    from ansible_collections.modelseed.fleet.plugins.module_utils._hub.api import HubApi
    from ansible_collections.modelseed.fleet.plugins.module_utils._hub.http_client import HttpClient

    api = HubApi(HttpClient(ca_path=ca_path, retries=1), endpoint)
    resolved = api.resolve(model_id, revision)
    listing = {f.path: f for f in api.list_files(model_id, resolved.commit)}
    if set(listing) != set(files):
        raise ValueError(f"{model_id} on the hub lists {sorted(listing)}, not {sorted(files)}")
    for path, data in files.items():
        if listing[path].sha256 != hashlib.sha256(data).hexdigest():
            raise ValueError(f"{model_id}: {path} differs from the hub's")
    return ModelSpec(model_id, dict(files), revision=revision, commit=resolved.commit, created_at=int(resolved.created_at),
                     file_revisions={path: f.revision for path, f in listing.items()})
