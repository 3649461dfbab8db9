"""What `bake resolve` checks beyond the TUF metadata: the test gate, attestations and
artifact bytes.

The TUF metadata cover image documents by length and hash, and they cover attestations by
digest. Here we apply the registry's test gate (its signed policy names the attestations
a version must have; a test result must say PASSED), open every attestation (signature by
a key of the registry's images role, subject = the image digest) and, for images stored
in an OCI layout inside a `dir:` registry, re-hash the manifest and every blob it
references (for a VM image: its disk, kernel and initrd blobs), so a changed byte
anywhere is caught before a deployer gets a reference. (Refs in an OCI registry are
verified by digest on pull, VM files by `bake fetch`.)

Re-hashing hundreds of MiB on every resolve would make it slow, so a blob that hashed
right is remembered by (device, inode, size, mtime, ctime). ctime cannot be set from user
space: any write, or an attempt to restore the mtime afterwards, changes it, so a changed
blob is always hashed again. The cache is advisory: each entry carries an HMAC under a
per-machine key (a 0600 random secret in the state folder, bound to that file's own device,
inode and ctime), so an entry someone else wrote — anyone who can write the state folder,
a CI cache restored from another job — is useless, and a blob without a valid entry is
hashed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from bake.attest.digest import sha256_file
from bake.attest.statements import SLSA_PROVENANCE, TEST_RESULT, open_statement
from bake.deploy.resolve import Resolution
from bake.errors import TrustError
from bake.infra.fsutil import atomic_write, write_cache
from bake.registry.client import Snapshot
from bake.registry.images import layout_tag, parse_layout_ref
from bake.registry.model import LAYOUT_SCHEME, absolute_ref

# Large attestations that resolve only hash-checks (their hash is in signed metadata) unless
# the registry's policy requires them; `bake drift` opens the file manifest when it uses it.
BOUND_ONLY = frozenset({"files"})
# what a required attestation must state
PREDICATES = {"provenance": SLSA_PROVENANCE, "test-result": TEST_RESULT}


def check_attestations(res: Resolution, snapshot: Snapshot) -> list[str]:
    """The test gate, then each attestation of the resolved build: the registry's policy
    names the attestations a version must have (by default a SLSA provenance and a PASSED
    test result); each must be a target of the signed metadata, signed by the registry's
    online key, about exactly this digest. Returns the predicate types seen."""
    where = f"{res.name}@{res.version}"
    missing = [k for k in snapshot.policy.required if k not in res.attestations]
    if missing:
        raise TrustError(
            f"{where} has no {missing[0]} attestation, which {res.registry} requires before anything "
            "deploys it",
            "publish a bake of it that passed verification; this version is refused",
        )
    seen = []
    for kind, digest in sorted(res.attestations.items()):
        data = snapshot.attestation(res.name, res.version, kind, digest)
        if kind in BOUND_ONLY and kind not in snapshot.policy.required:
            continue
        try:
            envelope = json.loads(data)
            stmt = open_statement(envelope, snapshot.attestation_keys, expect_subject_digest=res.digest)
        except TrustError as exc:
            raise TrustError(f"{where}: {kind} attestation: {exc.message}", exc.hint) from None
        except ValueError as exc:
            raise TrustError(f"{where}: {kind} attestation is not JSON: {exc}") from None
        kind_type = PREDICATES.get(kind)
        if kind_type is not None and stmt.get("predicateType") != kind_type:
            raise TrustError(f"{where}: its {kind} attestation states {stmt.get('predicateType')!r}")
        if kind == "test-result":
            _passed(where, stmt)
        seen.append(str(stmt.get("predicateType")))
    return seen


def _passed(where: str, stmt: Mapping[str, object]) -> None:
    predicate = stmt.get("predicate")
    result = predicate.get("result") if isinstance(predicate, dict) else None
    if result != "PASSED":
        failed = predicate.get("failedTests") if isinstance(predicate, dict) else None
        names = (
            ", ".join(str(f) for f in failed[:3]) if isinstance(failed, list) and failed else "none listed"
        )
        raise TrustError(
            f"{where}: its signed test result is {result!r}, not PASSED (failed: {names})",
            "this version did not pass its checks; deploy one that did",
        )


def layout_blob(layout: Path, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    return layout / "blobs" / algo / hexd


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


CACHE_FILE = "verified-blobs.json"
KEY_FILE = "verified-blobs.key"
_KEY_BYTES = 32


def machine_key(state: Path) -> bytes | None:
    """The key of this machine's blob cache: a random secret in ``state/KEY_FILE`` (0600,
    ours, made on first use) mixed with the device, inode and ctime of that file, so a copy
    of it restored elsewhere keys nothing. None when the file cannot be trusted (not a
    regular file of ours, readable by others) or made: the cache is then not used."""
    path = state / KEY_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                atomic_write(path, os.urandom(_KEY_BYTES), mode=0o600, replace=False)
            except FileExistsError:
                pass  # another process made it meanwhile
            except OSError:
                return None
            continue
        except OSError:
            return None
        try:
            st, secret = os.fstat(fd), os.read(fd, _KEY_BYTES + 1)
        finally:
            os.close(fd)
        ours = stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077
        if not ours or len(secret) != _KEY_BYTES:
            return None
        return hashlib.sha256(secret + f"|{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}".encode()).digest()
    return None


class HashCache:
    """Blobs already hashed right, by file identity; a small JSON file in the state folder
    whose entries count only with a valid HMAC under ``key`` (no key: nothing is cached)."""

    def __init__(self, path: Path | None, key: bytes | None = None):
        self.path = path if key is not None else None
        self.key = key or b""
        self.known: dict[str, str] = {}
        self.dirty = False
        if self.path is not None:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = None
            for k, v in data.items() if isinstance(data, dict) else ():
                if self._valid(str(k), v):
                    self.known[str(k)] = v["digest"]

    def _valid(self, entry: str, value: object) -> bool:
        if not isinstance(value, dict):
            return False
        digest, mac = value.get("digest"), value.get("mac")
        if not isinstance(digest, str) or not isinstance(mac, str):
            return False
        return hmac.compare_digest(mac, self._mac(entry, digest))

    def _mac(self, entry: str, digest: str) -> str:
        return hmac.new(self.key, f"{entry}\n{digest}".encode(), hashlib.sha256).hexdigest()

    def digest(self, path: Path) -> str:
        key = f"{path}|{_stamp(path.stat())}"
        hit = self.known.get(key)
        if hit is not None:
            return hit
        actual = sha256_file(path)
        self.known[key] = actual
        self.dirty = True
        return actual

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        kept = list(self.known.items())[-10000:]
        write_cache(self.path, {k: {"digest": d, "mac": self._mac(k, d)} for k, d in kept})


def _check_blob(layout: Path, digest: str, what: str, cache: HashCache) -> Path:
    path = layout_blob(layout, digest)
    if not path.is_file():
        raise TrustError(f"{what} {digest[:19]} is missing from {layout}")
    actual = cache.digest(path)
    if actual != digest:
        raise TrustError(f"{what} {digest[:19]} in {layout} was altered (its bytes hash to {actual[:19]})")
    return path


def check_layout_image(ref: str, cache: HashCache | None = None) -> None:
    """`oci-layout://DIR@sha256:…`: manifest, config and layers all hash to their digests."""
    cache = cache or HashCache(None)
    location, _, digest = ref.removeprefix(LAYOUT_SCHEME).rpartition("@")
    layout = Path(location)
    manifest_path = _check_blob(layout, digest, "image manifest", cache)
    manifest = json.loads(manifest_path.read_bytes())
    blobs = [manifest.get("config", {}), *manifest.get("layers", [])]
    for blob in blobs:
        d = blob.get("digest")
        if isinstance(d, str):
            _check_blob(layout, d, "image blob", cache)
    cache.save()


def default_cache(environ: Mapping[str, str] | None = None) -> HashCache:
    env = os.environ if environ is None else environ
    base = Path(env["BAKE_STATE_DIR"]) if env.get("BAKE_STATE_DIR") else Path.home() / ".local/state/bake"
    return HashCache(base / CACHE_FILE, machine_key(base))


def localize(res: Resolution, registry_url: str) -> Resolution:
    """A `dir:` registry stores layout refs relative to its root (so the folder can be
    copied or moved); deployers get a reference skopeo, podman and buildah accept,
    ``oci:/ABS/DIR:TAG`` (the layout's tag of this version's digest, which stays in
    ``digest``), and the layout by digest in ``layout_ref`` (``oci-layout:///ABS/DIR@…``)."""
    ref = absolute_ref(res.ref, registry_url)
    if ref and ref.startswith(LAYOUT_SCHEME):
        layout, digest = parse_layout_ref(ref)
        try:
            index = (layout / "index.json").read_bytes()
        except OSError as e:
            raise TrustError(f"cannot read {layout}/index.json: {e.strerror or e}") from e
        tag = layout_tag(index, digest, layout)
        return dataclasses.replace(res, ref=f"oci:{layout}:{tag}", layout_ref=ref)
    return res


def check_artifact(res: Resolution, cache: HashCache | None = None) -> None:
    layout_ref = res.layout_ref or (res.ref if res.ref and res.ref.startswith(LAYOUT_SCHEME) else None)
    if layout_ref:
        check_layout_image(layout_ref, cache or default_cache())
    if res.files and res.registry.startswith("dir:"):
        # a VM image's files are blobs of the dir: registry itself (bake/registry/disks.py)
        cache = cache or default_cache()
        root = Path(res.registry.removeprefix("dir:"))
        for role, digest in sorted(res.files.items()):
            _check_blob(root, digest, f"VM {role}", cache)
        cache.save()
