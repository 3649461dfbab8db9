"""Reproducible container images: two bakes of the same inputs give the same digest.

A `docker commit` keeps what varies between two bakes of equal inputs: every file's time,
the image's `created`, the logs and caches apt and dpkg write, ldconfig's aux-cache (it
holds file times), the day of the last password change in /etc/shadow, and the files the
engine puts into every container (/.dockerenv, /etc/hostname …). `normalize` rewrites
the image as deterministic tar layers, writes an OCI image layout whose config holds only
what the recipe declared, and loads that into the engine. A recipe without a bake parent
(its base is an imported root filesystem) becomes one layer, its exported filesystem; a
child keeps its parent's layers as they are and rewrites only the layer Packer's commit
added (:mod:`bake.targets.docker.layers`). Each rewritten layer gets:

- entries sorted by path (as bytes, so parents come first); each hard-link group is
  re-pointed at its first path, whatever order the export had;
- times clamped to the epoch; owners numeric only (no user or group names); of the PAX
  records only xattrs are kept (tarfile adds those a long or non-ASCII name needs);
- volatile paths dropped (DROPPED and the caller's patterns); in EMPTIED folders only
  what is not a folder goes;
- fixed content for a few files: logs (TRUNCATED), machine-id and the files the engine
  bind-mounts are kept, empty; shadow's last-change days become the epoch's day; and a
  .pyc records its source's clamped mtime (else Python finds it stale and recompiles);
- the layer is stored uncompressed: gzip output depends on the zlib build, so the digest
  would depend on the machine; uncompressed, it depends on the files alone;
- what the builder left is dropped: Packer's docker builder mounts its upload folder at
  /packer-files, and the commit keeps the empty mount point;
- the config gets the default PATH when the image had none (an image imported from a
  root filesystem has no Env), so `docker run IMAGE CMD` finds CMD as it would elsewhere;
- the manifest carries the `org.opencontainers.image.*` annotations the caller gives
  (:func:`image_annotations`: created, version, revision, source, base.name, base.digest), all
  derived from the bake's inputs, so they keep the digest reproducible.

The export is read once in tarfile's stream mode; file contents are spilled to one
temporary file beside the layout, never held in memory, and copied back in sorted order.
`diff_layers` names the files in which two layouts differ (`bake build --check-reproducible`).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fnmatch import translate
from pathlib import Path
from typing import IO, Any

from bake.attest.digest import canonical_json, is_digest, sha256_bytes, split_digest
from bake.errors import BakeError, ToolError
from bake.infra import process
from bake.infra.fsutil import replace_dir
from bake.infra.process import Call, Runner
from bake.registry.images import copy_argv
from bake.targets.docker import engine as docker
from bake.targets.docker import layers
from bake.targets.docker.engine import Engine

# SOURCE_DATE_EPOCH: 2020-01-01T00:00:00Z, one constant for every bake (see epoch_from_key).
EPOCH = 1577836800
DAY = 86400

# Dropped with everything below them (absolute glob patterns; `*` also matches `/`).
DROPPED: tuple[str, ...] = (
    "/.dockerenv",  # the engine's marker of a container
    "/tmp/*",  # noqa: S108 - a path dropped from the image, not a file anyone writes
    "/var/cache/ldconfig/aux-cache",  # holds the times of the libraries
    "/var/cache/debconf/*-old",  # debconf's backups of its databases
    "/var/lib/dbus/machine-id",  # random per machine
    "/packer-files",  # Packer's docker builder mounts its uploads here; the commit keeps the mount point
)
# Emptied: their files go, their folders stay (programs expect /run/lock; apt rebuilds
# its caches and lists; the lock files it makes again).
EMPTIED: tuple[str, ...] = ("/var/cache/apt", "/var/lib/apt/lists", "/run")
# Truncated: every regular file below is kept, empty. nginx will not start without
# /var/log/nginx; packages create their logs with the owner and mode they need.
TRUNCATED: tuple[str, ...] = ("/var/log",)
# Fixed content: empty. machine-id is random per machine ("empty: make one at first boot");
# the engine bind-mounts the other three into every container (the export shows its own).
EMPTY_FILES: Mapping[str, int | None] = {
    "/etc/machine-id": None,  # None: keep the mode
    "/etc/hostname": 0o644,
    "/etc/hosts": 0o644,
    "/etc/resolv.conf": 0o644,
}
SHADOW_FILES = ("/etc/shadow", "/etc/shadow-")  # the last-change day: what useradd wrote
SHADOW_LIMIT = 16 << 20  # a larger "shadow" is copied unchanged rather than read whole
PYC_HEADER = 16  # magic, flags (0: checked by the source's mtime), mtime, size

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
# What of `docker image inspect`'s Config is the image's own (the rest describes the
# container it was committed from: Hostname, Image, AttachStdin …).
CONFIG_FIELDS = (
    "Cmd",
    "Entrypoint",
    "Env",
    "ExposedPorts",
    "Healthcheck",
    "Labels",
    "StopSignal",
    "User",
    "Volumes",
    "WorkingDir",
)
HISTORY_NOTE = "bake: the baked filesystem, exported and normalized (reproducible)"
CHILD_NOTE = "bake: the recipe's changes over its parent, normalized (reproducible)"
# what `docker run` uses when an image sets no PATH (Docker's own default)
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ANNOTATION = "org.opencontainers.image."
LABEL = "io.bake.reproducible"

CHUNK = 1 << 20
TAR_BUFSIZE = 1 << 16
EXPORT_TIMEOUT = 3600.0
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

Streamer = Callable[[Call], AbstractContextManager[IO[bytes]]]


@dataclass(frozen=True)
class Normalized:
    image_id: str  # in the engine, as REPOSITORY:TAG
    manifest_digest: str  # of the OCI manifest: equal for equal inputs
    layout: Path  # the OCI image layout it was loaded from
    dropped: tuple[str, ...]  # volatile paths left out
    rewritten: tuple[str, ...]  # paths whose content (or mode) was fixed


@dataclass(frozen=True)
class Parent:
    """The bake image a child was built FROM, and the OCI layout bake wrote it to, when
    this machine has it (its layer files are then linked, not written again)."""

    image: str
    layout: Path | None = None


@dataclass(frozen=True)
class Layer:
    """A rewritten layer: its digest (also its diff ID: it is not compressed) and size."""

    digest: str
    size: int
    dropped: tuple[str, ...]
    rewritten: tuple[str, ...]


def epoch_from_key(bake_key: str) -> int:
    """The SOURCE_DATE_EPOCH of a bake: the constant EPOCH, whatever the key.

    A date derived from a hash (2020-01-01 plus key mod N days) would look like a time and
    mean none; a bake's inputs carry no time of their own (a pinned mirror snapshot would
    be one, and would be the place to derive it from). One constant also lets mmdebstrap,
    the build steps and this rewrite use the same epoch without knowing each other's keys.
    The key is checked so that a caller passing something else fails early.
    """
    split_digest(bake_key)
    return EPOCH


# --- what to drop or fix (pure) ----------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    epoch: int
    dropped: re.Pattern[str]

    @classmethod
    def of(cls, epoch: int, volatile: Iterable[str] = ()) -> Rules:
        patterns = [*DROPPED, *(_check_pattern(p) for p in volatile)]
        return cls(epoch, re.compile("|".join(f"(?:{translate(p)})" for p in patterns)))

    def drops(self, path: str, is_dir: bool) -> bool:
        """*path* (absolute) or a folder above it matches a pattern; or it lies in an
        EMPTIED folder and is not a folder itself."""
        i = len(path)
        while i > 0:
            if self.dropped.match(path[:i]):
                return True
            i = path.rfind("/", 0, i)
        return not is_dir and path.startswith(_BELOW_EMPTIED)

    @staticmethod
    def empties(path: str) -> bool:
        """A regular file at *path* is kept with no content."""
        return path in EMPTY_FILES or path.startswith(_BELOW_TRUNCATED)


_BELOW_EMPTIED = tuple(d + "/" for d in EMPTIED)
_BELOW_TRUNCATED = tuple(d + "/" for d in TRUNCATED)


def _check_pattern(raw: str) -> str:
    if not raw.startswith("/"):
        raise BakeError(f"volatile path {raw!r} is not absolute", "write it from /, e.g. /srv/cache/*")
    if raw.strip("/*") == "":
        raise BakeError(f"volatile path {raw!r} would drop the whole filesystem", "name subfolders")
    return raw.rstrip("/")


def fix_shadow(content: bytes, epoch: int) -> bytes:
    """Set each positive last-change day to the epoch's (0, "change at next login", stays)."""
    day = str(epoch // DAY).encode()
    lines = []
    for line in content.split(b"\n"):
        fields = line.split(b":")
        if len(fields) >= 3 and fields[2].isdigit() and int(fields[2]) > 0:
            fields[2] = day
        lines.append(b":".join(fields))
    return b"\n".join(lines)


# --- the layer rewrite ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Member:
    """One entry to write. Content (regular files) lies in the spill at offset/size; a hard
    link's linkname is the path of the regular file its group started from."""

    path: str  # relative: "etc/hosts"
    type: bytes
    mode: int
    uid: int
    gid: int
    mtime: int
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, str], ...] = ()
    offset: int = 0
    size: int = 0


def path_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def relative(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


class _Hashing:
    """A write-only file that hashes and counts what passes to *sink*."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.sink.write(data)


def rewrite_layer(
    src: IO[bytes], dst: IO[bytes], spill: IO[bytes], *, epoch: int, volatile: Sequence[str] = ()
) -> Layer:
    """Read the tar on *src* once and write its deterministic form to *dst*.

    *spill* is a seekable scratch file that holds the file contents between the two.
    """
    rules = Rules.of(epoch, volatile)
    got = _ingest(src, spill, rules)
    _retime_pycs(got, spill, epoch)
    out = _Hashing(dst)
    with tarfile.open(  # type: ignore[call-overload]  # stream mode calls only out.write()
        fileobj=out,
        mode="w|",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
    ) as tar:
        for m in _ordered(got.members.values(), got.content):
            if m.type == tarfile.REGTYPE:
                spill.seek(m.offset)
                tar.addfile(_tarinfo(m), spill)  # copies m.size bytes from there
            else:
                tar.addfile(_tarinfo(m))
    return Layer(
        f"sha256:{out.sha.hexdigest()}", out.size, tuple(sorted(got.dropped)), tuple(sorted(got.rewritten))
    )


@dataclass(frozen=True)
class _Ingested:
    members: dict[str, _Member]  # what to write, by relative path
    content: dict[str, tuple[int, int]]  # a regular file's (offset, size) in the spill
    sources: dict[str, int]  # a Python source's own mtime, before clamping
    dropped: list[str]
    rewritten: list[str]


def _ingest(src: IO[bytes], spill: IO[bytes], rules: Rules) -> _Ingested:
    """Every kept entry by path; where each regular file's content lies in the spill
    (dropped ones too: a kept hard link may need it); what was dropped or rewritten."""
    got = _Ingested({}, {}, {}, [], [])
    members, content, dropped, rewritten = got.members, got.content, got.dropped, got.rewritten
    roots: dict[str, str] = {}  # a hard link's path -> the regular file its group began with
    try:
        with tarfile.open(
            fileobj=src, mode="r|", bufsize=TAR_BUFSIZE, encoding="utf-8", errors="surrogateescape"
        ) as tar:
            while (info := tar.next()) is not None:
                tar.members.clear()  # type: ignore[attr-defined]  # keep memory flat
                rel = relative(info.name)
                if not rel:
                    continue
                path = "/" + rel
                m = _member(info, rel, rules.epoch)
                changed = False
                if info.isreg():
                    # dropped files too: a hard link that is kept may need the content
                    offset = spill.seek(0, os.SEEK_END)
                    changed = _spill(tar, info, path, rules.epoch, spill)
                    size = spill.tell() - offset
                    content[rel] = (offset, size)
                    roots.pop(rel, None)
                    if rel.endswith(".py"):
                        got.sources[rel] = int(info.mtime)
                    mode = EMPTY_FILES.get(path)
                    changed = changed or mode not in (None, m.mode)
                    m = replace(m, offset=offset, size=size, mode=m.mode if mode is None else mode)
                elif info.islnk():
                    target = relative(info.linkname)
                    roots[rel] = roots.get(target, target)
                    m = replace(m, linkname=roots[rel])
                if rules.drops(path, info.isdir()):
                    dropped.append(path)
                    members.pop(rel, None)
                    continue
                if changed:
                    rewritten.append(path)
                members[rel] = m
    except tarfile.TarError as e:
        raise BakeError(f"cannot read the exported filesystem as a tar: {e}") from e
    return got


def _retime_pycs(got: _Ingested, spill: IO[bytes], epoch: int) -> None:
    """Keep timestamp-based .pyc files valid: Python recompiles a module whose .pyc does
    not record its source's mtime, and clamping changed those of every older source."""
    for m in got.members.values():
        source = pyc_source(m.path) if m.type == tarfile.REGTYPE else None
        for _ in range(8):  # through symlinks: python3.11/sitecustomize.py -> /etc/python3.11/…
            link = got.members.get(source or "")
            if source is None or link is None or link.type != tarfile.SYMTYPE:
                break
            source = relative(posixpath.join(posixpath.dirname(source), link.linkname))
        mtime = got.sources.get(source) if source else None
        if mtime is None or mtime <= epoch or m.size < PYC_HEADER:
            continue
        spill.seek(m.offset)
        header = retime_pyc(spill.read(PYC_HEADER), mtime, epoch)
        if header is not None:
            spill.seek(m.offset)
            spill.write(header)


def pyc_source(path: str) -> str | None:
    """The source of a compiled module: ``a/__pycache__/b.cpython-311.pyc`` -> ``a/b.py``."""
    if not path.endswith(".pyc"):
        return None
    folder, name = posixpath.split(path)
    if posixpath.basename(folder) == "__pycache__":
        return posixpath.join(posixpath.dirname(folder), name.split(".", 1)[0] + ".py")
    return path[:-1]


def retime_pyc(header: bytes, source_mtime: int, new_mtime: int) -> bytes | None:
    """The 16-byte header of a timestamp-based .pyc (Python 3.7+) that recorded
    *source_mtime*, recording *new_mtime* instead; None for any other header."""
    if len(header) != PYC_HEADER or header[2:4] != b"\r\n" or header[4:8] != bytes(4):
        return None
    if not 3390 <= int.from_bytes(header[:2], "little") < 10000:  # 3.7's magic and later
        return None
    if int.from_bytes(header[8:12], "little") != source_mtime & 0xFFFFFFFF:
        return None
    return header[:8] + (new_mtime & 0xFFFFFFFF).to_bytes(4, "little") + header[12:]


_TYPES = (
    tarfile.LNKTYPE,
    tarfile.SYMTYPE,
    tarfile.DIRTYPE,
    tarfile.FIFOTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
)


def _member(info: tarfile.TarInfo, rel: str, epoch: int) -> _Member:
    if not info.isreg() and info.type not in _TYPES:
        raise BakeError(f"/{rel}: unsupported tar entry type {info.type!r} in the export")
    device = info.ischr() or info.isblk()
    return _Member(
        path=rel,
        type=tarfile.REGTYPE if info.isreg() else info.type,
        mode=info.mode & 0o7777,
        uid=info.uid,
        gid=info.gid,
        mtime=min(int(info.mtime), epoch),
        linkname=info.linkname if info.issym() else "",
        devmajor=info.devmajor if device else 0,
        devminor=info.devminor if device else 0,
        xattrs=tuple(sorted((k, v) for k, v in info.pax_headers.items() if k.startswith("SCHILY.xattr."))),
    )


def _spill(tar: tarfile.TarFile, info: tarfile.TarInfo, path: str, epoch: int, spill: IO[bytes]) -> bool:
    """Append a regular file's content to the spill; True when it was given other content."""
    if Rules.empties(path):
        return info.size > 0
    f = tar.extractfile(info)
    if f is None:  # pragma: no cover - a regular file always has a (maybe empty) body
        return False
    with f:
        if path in SHADOW_FILES and info.size <= SHADOW_LIMIT:
            data = f.read()
            fixed = fix_shadow(data, epoch)
            spill.write(fixed)
            return fixed != data
        while chunk := f.read(CHUNK):
            spill.write(chunk)
    return False


def _ordered(members: Iterable[_Member], content: Mapping[str, tuple[int, int]]) -> list[_Member]:
    """Sorted by path; in each hard-link group the first kept path holds the content and
    the others link to it (a tar must name a link's target before the link)."""
    groups: dict[str, list[_Member]] = {}
    out: list[_Member] = []
    for m in members:
        if m.type == tarfile.REGTYPE:
            groups.setdefault(m.path, []).append(m)
        elif m.type == tarfile.LNKTYPE:
            groups.setdefault(m.linkname, []).append(m)
        else:
            out.append(m)
    for root, group in groups.items():
        group.sort(key=lambda m: path_key(m.path))
        holder = group[0]
        offset, size = content.get(root, (0, 0))
        out.append(replace(holder, type=tarfile.REGTYPE, linkname="", offset=offset, size=size))
        out += [replace(m, type=tarfile.LNKTYPE, linkname=holder.path, offset=0, size=0) for m in group[1:]]
    out.sort(key=lambda m: path_key(m.path))
    return out


def _tarinfo(m: _Member) -> tarfile.TarInfo:
    info = tarfile.TarInfo(m.path)
    info.type = m.type
    info.mode = m.mode
    info.uid, info.gid = m.uid, m.gid
    info.uname = info.gname = ""
    info.mtime = m.mtime
    info.size = m.size if m.type == tarfile.REGTYPE else 0
    info.linkname = m.linkname
    info.devmajor, info.devminor = m.devmajor, m.devminor
    info.pax_headers = dict(m.xattrs)
    return info


# --- the OCI image (pure) ---------------------------------------------------------------


def image_config(
    inspect: Mapping[str, Any],
    diff_id: str,
    epoch: int,
    *,
    lower: Sequence[str] = (),
    lower_history: Sequence[Mapping[str, Any]] = (),
    note: str = HISTORY_NOTE,
) -> bytes:
    """The config blob: the image's own settings from `docker image inspect`, the epoch as
    `created`, a history entry per layer (*lower*: the parent's layers' diff IDs, with
    their history); canonical JSON (sorted keys, no spaces)."""
    created = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    source = inspect.get("Config") or {}
    config = {k: source[k] for k in CONFIG_FIELDS if source.get(k) not in (None, "", [], {})}
    env = list(config.get("Env") or [])
    if not any(isinstance(e, str) and e.startswith("PATH=") for e in env):
        config["Env"] = [DEFAULT_PATH, *env]
    doc: dict[str, Any] = {
        "architecture": inspect.get("Architecture") or "amd64",
        "os": inspect.get("Os") or "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [*lower, diff_id]},
        "history": [*(dict(h) for h in lower_history), {"created": created, "created_by": note}],
    }
    if inspect.get("Variant"):
        doc["variant"] = inspect["Variant"]
    return canonical_json(doc)


def _descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_bytes(blob), "size": len(blob)}


def image_manifest(
    config: bytes, layer: Layer, annotations: Mapping[str, str] | None = None, lower: Sequence[Layer] = ()
) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config),
        "layers": [{"mediaType": OCI_LAYER, "digest": x.digest, "size": x.size} for x in (*lower, layer)],
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    return canonical_json(doc)


def image_annotations(
    *,
    epoch: int,
    version: str,
    revision: str,
    source: str,
    base_name: str | None = None,
    base_digest: str | None = None,
) -> dict[str, str]:
    """The image's `org.opencontainers.image.*` annotations, from the bake's inputs only:
    ``created`` is the epoch (as the config's), ``revision`` the bake key (the digest of
    every input), ``source`` the recipe's URI; ``base.*`` the image built on, where known."""
    out = {
        "created": datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "version": version,
        "revision": revision,
        "source": source,
    }
    if base_name:
        out["base.name"] = base_name
    if base_digest:
        split_digest(base_digest)
        out["base.digest"] = base_digest
    return {ANNOTATION + k: v for k, v in out.items()}


def image_index(manifest: bytes, tag: str) -> bytes:
    entry = {**_descriptor(OCI_MANIFEST, manifest), "annotations": {REF_NAME: _check_tag(tag)}}
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]})


def _check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise BakeError(f"{tag!r} is not a valid image tag", "use letters, digits, '_', '.', '-' (max 128)")
    return tag


# --- the edge: export, layout, load -------------------------------------------------------


def normalize(
    runner: Runner,
    engine: Engine,
    image_id: str,
    *,
    epoch: int,
    volatile: Sequence[str] = (),
    repository: str,
    tag: str,
    work: Path,
    streamer: Streamer = process.stream,
    manifest_annotations: Mapping[str, str] | None = None,
    parent: Parent | None = None,
) -> Normalized:
    """Rewrite *image_id* deterministically into the OCI layout ``work/oci`` and load it
    into the engine as ``repository:tag``. *volatile* adds glob patterns to DROPPED;
    *manifest_annotations* go on the manifest (see :func:`image_annotations`). With the
    *parent* it was built FROM, when that is a bake image, the parent's layers are kept
    and only the new one is rewritten (:mod:`bake.targets.docker.layers`); else the whole
    filesystem becomes one layer."""
    _check_tag(tag)
    Rules.of(epoch, volatile)  # a bad pattern fails before any work
    inspect = docker.inspect_image(runner, engine, image_id)
    if inspect is None:
        raise ToolError(f"no image {image_id} in the engine at {engine.host}")
    work.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".oci-", dir=work))
    ref = f"{repository}:{tag}"
    try:
        blobs = building / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        rules = (epoch, volatile, streamer)
        child = (
            None
            if parent is None
            else _child_layer(runner, engine, image_id, inspect, parent, building, rules)
        )
        lower: tuple[Layer, ...] = ()
        history: list[dict[str, Any]] = []
        note = HISTORY_NOTE
        if child is None:
            layer = _export_layer(runner, engine, image_id, building, epoch, volatile, streamer)
        else:
            lower, history, layer = child
            note = CHILD_NOTE
        config = image_config(
            inspect, layer.digest, epoch, lower=[x.digest for x in lower], lower_history=history, note=note
        )
        manifest = image_manifest(config, layer, manifest_annotations, lower)
        for blob in (config, manifest):
            _write(blobs / split_digest(sha256_bytes(blob))[1], blob)
        _write(building / "oci-layout", OCI_LAYOUT)
        _write(building / "index.json", image_index(manifest, tag))
        layout = replace_dir(building, work / "oci").resolve()
    finally:
        shutil.rmtree(building, ignore_errors=True)
    if not (lower and _load_new_layer(runner, engine, layout, config, lower, layer, ref)):
        to = f"docker-daemon:{ref}"
        runner(Call(argv=copy_argv(f"oci:{layout}:{tag}", to, dest_daemon_host=engine.host)))
    loaded = docker.image_id(runner, engine, ref)
    if loaded is None:
        raise ToolError(f"bake loaded {layout} but the engine at {engine.host} has no {ref}")
    return Normalized(loaded, sha256_bytes(manifest), layout, layer.dropped, layer.rewritten)


def _child_layer(
    runner: Runner,
    engine: Engine,
    image_id: str,
    inspect: Mapping[str, Any],
    parent: Parent,
    building: Path,
    rules: tuple[int, Sequence[str], Streamer],
) -> tuple[tuple[Layer, ...], list[dict[str, Any]], Layer] | None:
    """The parent's layers (in the layout as they are) and the image's own layer,
    rewritten; None when the image is not a bake image's layers plus one."""
    epoch, volatile, streamer = rules
    parent_layers = _layers_of(docker.inspect_image(runner, engine, parent.image))
    own = _layers_of(inspect)
    if not parent_layers or own[:-1] != parent_layers or len(own) != len(parent_layers) + 1:
        return None
    history_argv = ("history", "--no-trunc", "--format", "{{.CreatedBy}}", "--", parent.image)
    made_by = runner(engine.call(*history_argv)).stdout
    if not all(line.startswith(layers.HISTORY_PREFIX) for line in made_by.splitlines()):
        return None  # a parent bake did not write (a root filesystem import): not reproducible as it is
    blobs = building / "blobs" / "sha256"
    scratch = Path(tempfile.mkdtemp(prefix=".save-", dir=building))  # what the save held
    save = engine.call("save", "--", image_id, timeout=EXPORT_TIMEOUT)
    try:
        try:
            with streamer(save) as out:
                saved = layers.read_save(out, scratch, _blobs_of(parent.layout, parent_layers))
        except layers.Lost:  # the parent's layout here is not what the engine holds: read it all
            with streamer(save) as out:
                saved = layers.read_save(out, scratch)
        history = layers.parent_history(saved.config, parent_layers)
        if history is None:
            return None
        lower = []
        for diff_id, path in saved.layers[:-1]:
            size = path.stat().st_size
            blob = blobs / split_digest(diff_id)[1]
            if diff_id in saved.reused:
                _link(path, blob)
            else:
                _seal(path, blob)
            lower.append(Layer(diff_id, size, (), ()))
        fd, name = tempfile.mkstemp(prefix=".layer-", dir=blobs)
        with (
            os.fdopen(fd, "wb") as dst,
            saved.layers[-1][1].open("rb") as src,
            tempfile.TemporaryFile(dir=scratch) as spill,
        ):
            layer = rewrite_layer(src, dst, spill, epoch=epoch, volatile=volatile)
        _seal(Path(name), blobs / split_digest(layer.digest)[1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return tuple(lower), history, layer


def _blobs_of(layout: Path | None, wanted: Sequence[str]) -> dict[str, Path]:
    """The files of the *wanted* layers in the parent's own layout, by diff ID (a hint:
    `read_save` believes a file only when it hashes right)."""
    if layout is None:
        return {}
    try:
        index = json.loads((layout / "index.json").read_bytes())
        manifest = json.loads(
            (layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_bytes()
        )
        digests = [str(d["digest"]) for d in manifest["layers"]]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return {}
    return {d: layout / "blobs" / "sha256" / d[7:] for d in digests if d in wanted and is_digest(d)}


def _link(path: Path, blob: Path) -> None:
    """A layer the parent's layout holds: linked into this one (copied across filesystems)."""
    try:
        os.link(path, blob)
    except FileExistsError:
        pass
    except OSError:
        shutil.copyfile(path, blob)
        _seal(blob, blob)


def _layers_of(inspect: Mapping[str, Any] | None) -> list[str]:
    found = ((inspect or {}).get("RootFS") or {}).get("Layers") or []
    return [str(x) for x in found]


def _seal(path: Path, blob: Path) -> None:
    """A finished blob: readable like the others (mkstemp makes 0600), on disk, in place."""
    with path.open("rb+") as f:
        os.fchmod(f.fileno(), 0o644)
        os.fsync(f.fileno())
    path.replace(blob)


def _load_new_layer(
    runner: Runner,
    engine: Engine,
    layout: Path,
    config: bytes,
    lower: Sequence[Layer],
    layer: Layer,
    ref: str,
) -> bool:
    """``docker load`` of an archive that carries the new layer only: the engine holds the
    parent's (the image was built on them). False when the engine refuses it."""
    fd, name = tempfile.mkstemp(prefix=".load-", suffix=".tar", dir=layout.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            own = layout / "blobs" / "sha256" / split_digest(layer.digest)[1]
            files = [*((x.digest, None) for x in lower), (layer.digest, own)]
            layers.load_archive(out, config, files, ref)
        return runner(engine.call("load", "-q", "-i", name, check=False)).returncode == 0
    finally:
        Path(name).unlink(missing_ok=True)


def _export_layer(
    runner: Runner,
    engine: Engine,
    image_id: str,
    layout: Path,
    epoch: int,
    volatile: Sequence[str],
    streamer: Streamer,
) -> Layer:
    # A container is created (never started) for its filesystem; the entrypoint only
    # satisfies `docker create` for an image without one.
    create = ("create", "--network", "none", "--label", f"{LABEL}=export", *engine.label_args())
    create = (*create, "--entrypoint", "/bin/true")
    cid = runner(engine.call(*create, "--", image_id)).stdout.strip()
    try:
        blobs = layout / "blobs" / "sha256"
        fd, name = tempfile.mkstemp(prefix=".layer-", dir=blobs)
        export = engine.call("export", "--", cid, timeout=EXPORT_TIMEOUT)
        with (
            os.fdopen(fd, "wb") as dst,
            tempfile.TemporaryFile(prefix=".spill-", dir=layout) as spill,
            streamer(export) as out,
        ):
            layer = rewrite_layer(out, dst, spill, epoch=epoch, volatile=volatile)
        _seal(Path(name), blobs / split_digest(layer.digest)[1])
    finally:
        docker.remove_container(runner, engine, cid)
    return layer


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
