"""Content digests and canonical JSON: the identities everything else signs and pins.

Disk images are many GiB, so files are hashed streamed into fixed, preallocated buffers:
memory stays flat whatever the size. hashlib releases the GIL while it hashes, so one
helper thread reads the next chunk while the current one is hashed; that overlap is what
lets this beat ``openssl dgst``, which reads and hashes in turn.

Digests are written ``sha256:<64 lowercase hex>``, the OCI form, everywhere in bake.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from io import FileIO
from pathlib import Path
from typing import Protocol

from bake.errors import BakeError

CHUNK = 1 << 20
ALGORITHM = "sha256"

_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")


class _Hasher(Protocol):
    def update(self, data: memoryview, /) -> None: ...


def sha256_file(path: Path, chunk_size: int = 4 * CHUNK) -> str:
    """Return ``sha256:<hex>`` of the file at *path*, reading it in *chunk_size* pieces.

    Uses two buffers of *chunk_size* bytes, allocated once; nothing else grows with the
    file. Files larger than one chunk are read ahead on a helper thread.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    h = hashlib.sha256()
    try:
        with path.open("rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size <= chunk_size:
                _hash_serial(f, h, chunk_size)
            else:
                _hash_read_ahead(f, h, chunk_size)
    except OSError as e:
        raise BakeError(
            f"cannot read {path} to hash it: {e.strerror or e}",
            hint="check that the file exists and is readable",
        ) from e
    return f"{ALGORITHM}:{h.hexdigest()}"


def _hash_serial(f: FileIO, h: _Hasher, chunk_size: int) -> None:
    view = memoryview(bytearray(chunk_size))
    while n := f.readinto(view):
        h.update(view if n == chunk_size else view[:n])


def _hash_read_ahead(f: FileIO, h: _Hasher, chunk_size: int) -> None:
    # Double buffering: the helper fills one buffer while this thread hashes the other.
    # Only one read is in flight at a time, so the file position is never shared.
    views = (memoryview(bytearray(chunk_size)), memoryview(bytearray(chunk_size)))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bake-digest") as reader:
        i = 0
        n = f.readinto(views[0])
        while n:
            pending = reader.submit(f.readinto, views[1 - i])
            view = views[i]
            h.update(view if n == chunk_size else view[:n])
            n = pending.result()
            i = 1 - i


def sha256_bytes(data: bytes) -> str:
    """Return ``sha256:<hex>`` of *data*."""
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def canonical_json(obj: object) -> bytes:
    """Serialise *obj* to the one byte string that is signed and hashed for it.

    Sorted keys, no whitespace, UTF-8 (not ``\\u`` escapes), and no NaN or Infinity,
    which JSON cannot represent and other parsers reject.
    """
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise BakeError(
            f"cannot encode as canonical JSON: {e}",
            hint="only dicts with str keys, lists, str, int, finite float, bool and None",
        ) from e
    return text.encode("utf-8")


def split_digest(d: str) -> tuple[str, str]:
    """Split ``sha256:<hex>`` into ``("sha256", hex)``, or raise BakeError saying why not."""
    m = _DIGEST_RE.fullmatch(d)
    if m:
        return ALGORITHM, m.group(1)
    raise BakeError(f"not a digest: {d!r}", hint=_digest_hint(d))


def is_digest(s: object) -> bool:
    """True when *s* is a string of the form ``sha256:<64 lowercase hex>``."""
    return isinstance(s, str) and _DIGEST_RE.fullmatch(s) is not None


def _digest_hint(d: str) -> str:
    algo, sep, rest = d.partition(":")
    if not sep and _HEX64_RE.fullmatch(d):
        return f"add the algorithm: sha256:{d.lower()}"
    if sep and algo.lower() == ALGORITHM and _HEX64_RE.fullmatch(rest):
        return f"write it in lower case: sha256:{rest.lower()}"
    if sep and algo != ALGORITHM:
        return f"only sha256 digests are supported, not {algo!r}"
    return "expected 'sha256:' followed by 64 lowercase hex digits"
