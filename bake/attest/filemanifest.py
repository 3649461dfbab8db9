"""File manifests: what every path of an image is, so a running instance can be held to it.

A manifest lists, for every path of an image's filesystem except the volatile ones, its
type, permission bits, owner and group, a regular file's sha256 and a symlink's target.
It is recorded at bake time and signed as an in-toto statement about the image digest;
`bake.drift` later compares a live instance against it.

The live side is collected as ONE stream, never a command per file:

- ``docker://CONTAINER``: ``docker export`` streams the container's filesystem as a tar,
  read here in tarfile's stream mode with each member hashed in chunks as it passes.
  Nothing runs inside the container, so a tampered instance cannot lie about itself,
  and images without a shell or coreutils are covered too.
- ``ssh://USER@HOST[:PORT]``: one ``ssh`` running GNU ``find -printf`` with ``-exec
  sha256sum -z {} +``: metadata records and hash batches on one NUL-separated stream.

Memory stays flat in file sizes. The tar reader remembers one digest per regular file
(to resolve hard links, which a tar carries without content); the find parser holds at
most one ``sha256sum`` batch. The root directory itself is never listed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import os
import posixpath
import re
import shlex
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Literal, cast

from bake.attest.keys import PublicKey
from bake.attest.statements import open_statement, statement
from bake.errors import BakeError, TrustError
from bake.infra.process import Call

FILE_MANIFEST = "https://bake.invalid/attestation/file-manifest/v1"

# Paths whose content a running system changes by design, or that Docker bind-mounts
# into every container. A recipe adds its own with `volatile:`.
DEFAULT_VOLATILE: tuple[str, ...] = (
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",  # noqa: S108 - a path drift ignores, not a file anyone writes
    "/var/log",
    "/var/cache",
    "/var/tmp",  # noqa: S108 - likewise
    "/var/lib/apt/lists",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/.dockerenv",
)

Kind = Literal["file", "dir", "symlink", "other"]
KINDS: tuple[Kind, ...] = ("file", "dir", "symlink", "other")

CHUNK = 1 << 20
TAR_BUFSIZE = 1 << 16  # tarfile's stream buffer: copies its rest on each header read
TIMEOUT = 3600.0

_HEX64 = re.compile(rb"[0-9a-f]{64}")
_GLOB_CHARS = re.compile(r"([*?\[\]\\])")

Streamer = Callable[[Call], AbstractContextManager[IO[bytes]]]


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of a filesystem. *mode* holds the permission bits with setuid/setgid/sticky."""

    path: str
    kind: Kind
    mode: int
    uid: int
    gid: int
    sha256: str | None = None  # hex digest of a regular file's content (None: unknown)
    target: str | None = None  # a symlink's target, as written


@dataclass(frozen=True)
class FileManifest:
    """A verified manifest: the image it is about, its entries and its volatile paths."""

    image: str
    entries: tuple[Entry, ...]
    volatile: tuple[str, ...]


# --- volatile paths ----------------------------------------------------------------------


def volatile_set(extra: Iterable[str] = ()) -> frozenset[str]:
    """The default volatile paths plus *extra* (a recipe's `volatile:`), normalised."""
    out = set()
    for raw in (*DEFAULT_VOLATILE, *extra):
        if not raw.startswith("/"):
            raise BakeError(f"volatile path {raw!r} is not absolute", hint="write it from /, e.g. /srv/cache")
        path = posixpath.normpath(raw)
        if path.startswith("//"):  # normpath keeps a leading "//" (POSIX allows it to differ)
            path = "/" + path.lstrip("/")
        if path == "/":
            raise BakeError("volatile path '/' would ignore the whole filesystem", hint="name subfolders")
        out.add(path)
    return frozenset(out)


def is_volatile(path: str, volatile: frozenset[str]) -> bool:
    """True when *path* is a volatile path or lies below one."""
    if path in volatile:
        return True
    i = path.find("/", 1)
    while i != -1:
        if path[:i] in volatile:
            return True
        i = path.find("/", i + 1)
    return False


# --- the docker:// collector: a tar stream -----------------------------------------------


def tar_entries(stream: IO[bytes], volatile: frozenset[str] = frozenset()) -> Iterator[Entry]:
    """The entries of the tar on *stream*, read once, front to back, in stream mode.

    Regular files are hashed in CHUNK pieces as they pass; volatile members are skipped
    unread. A hard link gets the digest of the file it links to, seen earlier in the tar.
    """
    digests: dict[str, str] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=TAR_BUFSIZE) as tar:
            while (member := tar.next()) is not None:
                # tarfile keeps every header it read (memory would grow with the image);
                # we need none of them back. `members` is real but not in the stubs.
                tar.members.clear()  # type: ignore[attr-defined]
                path = _tar_path(member.name)
                if path == "/" or is_volatile(path, volatile):
                    continue
                yield _tar_entry(tar, member, path, digests)
    except tarfile.TarError as e:
        raise BakeError(f"cannot read the filesystem stream as a tar: {e}") from e


def _tar_entry(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, digests: dict[str, str]) -> Entry:
    mode, uid, gid = member.mode & 0o7777, member.uid, member.gid
    if member.isreg():
        digest = _hash_member(tar, member)
        digests[path] = digest
        return Entry(path, "file", mode, uid, gid, sha256=digest)
    if member.islnk():
        return Entry(path, "file", mode, uid, gid, sha256=digests.get(_tar_path(member.linkname)))
    if member.issym():
        return Entry(path, "symlink", mode, uid, gid, target=member.linkname)
    if member.isdir():
        return Entry(path, "dir", mode, uid, gid)
    return Entry(path, "other", mode, uid, gid)


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    h = hashlib.sha256()
    f = tar.extractfile(member)
    if f is not None:
        with f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _tar_path(name: str) -> str:
    name = name.removeprefix("./").strip("/")
    return "/" + name if name not in ("", ".") else "/"


# --- the ssh:// collector: find + sha256sum ----------------------------------------------

_FIND_RECORD = "@%y %m %U %G %p\\0%l\\0"  # -printf: "@" marks metadata; the link target follows
_FIND_KINDS: dict[bytes, Kind] = {b"f": "file", b"d": "dir", b"l": "symlink"}


def find_argv(volatile: frozenset[str]) -> tuple[str, ...]:
    """GNU find over one filesystem: a metadata record per path, and regular files hashed
    in ``sha256sum -z`` batches (``{} +``). find flushes its own output before it starts a
    batch and waits for it, so records and batches never interleave mid-record.
    """
    prune: list[str] = []
    for path in sorted(volatile):
        prune += ["-o", "-path", _GLOB_CHARS.sub(r"\\\1", path)]
    head = ("find", "/", "-xdev", "-mindepth", "1")
    skip = ("(", *prune[1:], ")", "-prune", "-o") if prune else ()
    hash_files = ("(", "-type", "f", "-exec", "sha256sum", "-z", "{}", "+", ")")
    return (*head, *skip, "-printf", _FIND_RECORD, *hash_files)


def find_command(volatile: frozenset[str]) -> str:
    """The one command line an ssh:// instance runs (any POSIX login shell; ``sh -c`` too)."""
    return shlex.join(("env", "LC_ALL=C", *find_argv(volatile)))


def find_entries(stream: IO[bytes], chunk_size: int = 1 << 16) -> Iterator[Entry]:
    """Parse the output of `find_command`: NUL-terminated tokens, read in pieces.

    A regular file's record and its digest arrive apart (the digest with its batch);
    whichever comes second completes the entry. Raises BakeError on output that is not
    what `find_command` prints, naming the token.
    """
    meta: dict[str, tuple[int, int, int]] = {}  # files listed, digest still to come
    sums: dict[str, str] = {}  # digests that came before their file's record
    link_of: bytes | None = None  # the metadata record waiting for its link-target token
    rest = b""
    while block := stream.read(chunk_size):
        tokens = (rest + block).split(b"\0")
        rest = tokens.pop()
        for token in tokens:
            if link_of is not None:
                entry = _find_record(link_of, token)
                link_of = None
                if entry.kind != "file":
                    yield entry
                elif entry.path in sums:
                    yield _with_sum(entry, sums.pop(entry.path))
                else:
                    meta[entry.path] = (entry.mode, entry.uid, entry.gid)
            elif token.startswith(b"@"):
                link_of = token
            else:
                path, digest = _find_sum(token)
                if path in meta:
                    mode, uid, gid = meta.pop(path)
                    yield Entry(path, "file", mode, uid, gid, sha256=digest)
                else:
                    sums[path] = digest
    if rest or link_of is not None:
        raise BakeError(f"find output ends in the middle of a record: {_show(rest or link_of or b'')}")
    if meta or sums:
        some = sorted(meta or sums)[:3]
        raise BakeError(
            f"find output lists {len(meta)} file(s) without a digest and {len(sums)} digest(s) "
            f"without a file (e.g. {', '.join(some)})",
            hint="a file changed while it was read, or sha256sum is not GNU coreutils (needs -z)",
        )


def _find_record(record: bytes, target: bytes) -> Entry:
    fields = record[1:].split(b" ", 4)
    if len(fields) != 5 or not fields[4].startswith(b"/"):
        raise BakeError(f"unexpected find record {_show(record)}")
    kind_code, mode, uid, gid, raw_path = fields
    try:
        mode_bits, uid_n, gid_n = int(mode, 8), int(uid), int(gid)
    except ValueError:
        raise BakeError(f"unexpected find record {_show(record)}") from None
    kind = _FIND_KINDS.get(kind_code, "other")
    return Entry(
        os.fsdecode(raw_path),
        kind,
        mode_bits & 0o7777,
        uid_n,
        gid_n,
        target=os.fsdecode(target) if kind == "symlink" else None,
    )


def _find_sum(token: bytes) -> tuple[str, str]:
    # GNU `sha256sum -z`: 64 hex digits, a space, " " (text) or "*" (binary), the name unescaped.
    if len(token) < 67 or not _HEX64.fullmatch(token[:64]) or token[64:66] not in (b"  ", b" *"):
        raise BakeError(f"unexpected sha256sum output {_show(token)}")
    return os.fsdecode(token[66:]), token[:64].decode("ascii")


def _with_sum(entry: Entry, digest: str) -> Entry:
    return Entry(entry.path, entry.kind, entry.mode, entry.uid, entry.gid, sha256=digest)


def _show(token: bytes) -> str:
    return repr(token[:120]) + ("…" if len(token) > 120 else "")


# --- canonical encoding and the signed statement -----------------------------------------


def entry_to_json(e: Entry) -> dict[str, object]:
    """The JSON form of an entry; a name that is not UTF-8 goes as ``pathBase64``."""
    out: dict[str, object] = {"type": e.kind, "mode": f"{e.mode:04o}", "uid": e.uid, "gid": e.gid}
    _put_text(out, "path", e.path)
    if e.sha256 is not None:
        out["sha256"] = e.sha256
    if e.target is not None:
        _put_text(out, "target", e.target)
    return out


_FIELDS = frozenset({"path", "pathBase64", "type", "mode", "uid", "gid", "sha256", "target", "targetBase64"})
_MODE = re.compile(r"[0-7]{4}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def entry_from_json(raw: object, where: str) -> Entry:
    """Parse one entry; raise TrustError naming *where* (``entries[12].mode``) if malformed.

    Called once per path of an image (10,000 and more), so the common case (text fields,
    no base64) takes the short way; the checks are the same either way."""
    if not isinstance(raw, dict):
        raise TrustError(f"{where} is not an object")
    if not _FIELDS.issuperset(raw):
        raise TrustError(f"{where} has unknown field(s) {', '.join(sorted(set(raw) - _FIELDS))}")
    path = raw.get("path")
    if type(path) is not str or "pathBase64" in raw:
        path = _get_text(raw, "path", where)
    if path is None or not path.startswith("/"):
        raise TrustError(f"{where}.path is missing or not absolute")
    kind = raw.get("type")
    if kind not in KINDS:
        raise TrustError(f"{where}.type must be one of {', '.join(KINDS)}, not {kind!r}")
    mode = raw.get("mode")
    if type(mode) is not str or not _MODE.fullmatch(mode):
        raise TrustError(f"{where}.mode must be 4 octal digits, not {mode!r}")
    uid, gid = raw.get("uid"), raw.get("gid")
    if type(uid) is not int or type(gid) is not int or uid < 0 or gid < 0:  # bool is no int here
        raise TrustError(f"{where}.uid and .gid must be non-negative integers")
    sha = raw.get("sha256")
    if sha is not None and not (type(sha) is str and _SHA256.fullmatch(sha)):
        raise TrustError(f"{where}.sha256 must be 64 lowercase hex digits")
    if (sha is not None) != (kind == "file"):
        raise TrustError(f"{where}: a sha256 belongs to regular files and only to them")
    target = raw.get("target")
    if (target is not None and type(target) is not str) or "targetBase64" in raw:
        target = _get_text(raw, "target", where)
    if (target is not None) != (kind == "symlink"):
        raise TrustError(f"{where}: a target belongs to symlinks and only to them")
    return Entry(path, cast(Kind, kind), int(mode, 8), uid, gid, sha, target)


def _put_text(out: dict[str, object], key: str, value: str) -> None:
    raw = value.encode("utf-8", "surrogateescape")
    try:
        out[key] = raw.decode("utf-8")
    except UnicodeDecodeError:
        out[key + "Base64"] = base64.standard_b64encode(raw).decode("ascii")


def _get_text(raw: Mapping[str, object], key: str, where: str) -> str | None:
    text, b64 = raw.get(key), raw.get(key + "Base64")
    if text is not None and b64 is not None:
        raise TrustError(f"{where} has both {key} and {key}Base64")
    if b64 is not None:
        if not isinstance(b64, str):
            raise TrustError(f"{where}.{key}Base64 is not a string")
        try:
            return os.fsdecode(base64.b64decode(b64, validate=True))
        except (binascii.Error, ValueError) as e:
            raise TrustError(f"{where}.{key}Base64 is not valid base64") from e
    if text is not None and not isinstance(text, str):
        raise TrustError(f"{where}.{key} is not a string")
    return text


def manifest_predicate(entries: Iterable[Entry], volatile: Iterable[str]) -> dict[str, object]:
    """The predicate: entries sorted by path (one byte string per manifest), volatile paths."""
    ordered = sorted(entries, key=lambda e: e.path)
    for a, b in itertools.pairwise(ordered):
        if a.path == b.path:
            raise BakeError(f"the manifest lists {a.path} twice")
    return {"volatile": sorted(volatile), "entries": [entry_to_json(e) for e in ordered]}


def manifest_statement(
    image_digest: str, entries: Iterable[Entry], volatile: Iterable[str], *, name: str = "image"
) -> dict[str, object]:
    """An in-toto statement: the image (``sha256:…``, named *name*) has these files."""
    return statement([(name, image_digest)], FILE_MANIFEST, manifest_predicate(entries, volatile))


def open_manifest(
    envelope: Mapping[str, object], trusted: Sequence[PublicKey], *, image_digest: str
) -> FileManifest:
    """Verify a signed manifest of *image_digest* and parse it; raise TrustError if it is not one."""
    stmt = open_statement(envelope, trusted, expect_subject_digest=image_digest)
    return manifest_of(stmt, image_digest)


def manifest_of(stmt: Mapping[str, object], image_digest: str) -> FileManifest:
    """The manifest a verified statement (about *image_digest*) carries; TrustError if malformed."""
    if stmt.get("predicateType") != FILE_MANIFEST:
        raise TrustError(
            f"the statement is a {stmt.get('predicateType')!r}, not a file manifest",
            hint="give the file-manifest attestation of the image",
        )
    predicate = stmt.get("predicate")
    if not isinstance(predicate, dict):
        raise TrustError("file manifest: predicate is not an object")
    raw_entries, raw_volatile = predicate.get("entries"), predicate.get("volatile")
    if not isinstance(raw_entries, list):
        raise TrustError("file manifest: entries is not a list")
    if not isinstance(raw_volatile, list) or not all(isinstance(v, str) for v in raw_volatile):
        raise TrustError("file manifest: volatile is not a list of paths")
    entries = tuple(entry_from_json(raw, f"entries[{i}]") for i, raw in enumerate(raw_entries))
    return FileManifest(image=image_digest, entries=entries, volatile=tuple(raw_volatile))
