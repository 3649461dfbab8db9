"""What `bake resolve` checks beyond the signed index: attestations and artifact bytes.

The index signature covers image documents by digest, and they cover attestation blobs by
digest. Here we open every attestation (signature by a trusted key, subject = the image
digest) and, for images stored in an OCI layout inside a `dir:` registry, re-hash the
manifest and every blob it references (for a VM image: its disk, kernel and initrd
blobs), so a changed byte anywhere is caught before a deployer gets a reference. (Refs in
an OCI registry are verified by digest on pull, VM files by `bake fetch`.)

Re-hashing hundreds of MiB on every resolve would make it slow, so a blob that hashed
right is remembered by (device, inode, size, mtime, ctime). ctime cannot be set from user
space: any write, or an attempt to restore the mtime afterwards, changes it, so a changed
blob is always hashed again.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bake.attest.digest import sha256_file
from bake.attest.keys import PublicKey
from bake.attest.statements import open_statement
from bake.deploy.resolve import Resolution
from bake.errors import TrustError
from bake.infra.fsutil import write_cache
from bake.registry.images import layout_tag, parse_layout_ref
from bake.registry.model import LAYOUT_SCHEME, RELATIVE_LAYOUT

# Large attestations that resolve only hash-checks (their digest is bound by the signed
# index); `bake drift` opens and verifies the file manifest when it uses it.
BOUND_ONLY = frozenset({"files"})


def check_attestations(
    res: Resolution, load_blob: Callable[[str], bytes], trusted: Sequence[PublicKey]
) -> list[str]:
    """Open each attestation of the resolved build; return the predicate types seen."""
    seen = []
    for kind, digest in sorted(res.attestations.items()):
        if kind in BOUND_ONLY:
            load_blob(digest)  # the signed index binds it by digest; reading checks the hash
            continue
        try:
            envelope = json.loads(load_blob(digest))
            stmt = open_statement(envelope, trusted, expect_subject_digest=res.digest)
        except TrustError as exc:
            raise TrustError(
                f"{res.name}@{res.version}: {kind} attestation: {exc.message}", exc.hint
            ) from None
        except ValueError as exc:
            raise TrustError(f"{res.name}@{res.version}: {kind} attestation is not JSON: {exc}") from None
        seen.append(str(stmt.get("predicateType")))
    return seen


def layout_blob(layout: Path, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    return layout / "blobs" / algo / hexd


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


class HashCache:
    """Blobs already hashed right, by file identity; a small JSON file in the state folder."""

    def __init__(self, path: Path | None):
        self.path = path
        self.known: dict[str, str] = {}
        self.dirty = False
        if path is not None:
            try:
                data = json.loads(path.read_text())
                if isinstance(data, dict):
                    self.known = {str(k): str(v) for k, v in data.items()}
            except (OSError, ValueError):
                self.known = {}

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
        write_cache(self.path, dict(list(self.known.items())[-10000:]))


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
    return HashCache(base / "verified-blobs.json")


def localize(res: Resolution, registry_url: str) -> Resolution:
    """A `dir:` registry stores layout refs relative to its root (so the folder can be
    copied or moved); deployers get a reference skopeo, podman and buildah accept,
    ``oci:/ABS/DIR:TAG`` (the layout's tag of this version's digest, which stays in
    ``digest``), and the layout by digest in ``layout_ref`` (``oci-layout:///ABS/DIR@…``)."""
    ref = res.ref
    if ref and ref.startswith(RELATIVE_LAYOUT) and not ref.startswith(LAYOUT_SCHEME):
        root = Path(registry_url.removeprefix("dir:")).resolve()
        ref = f"{LAYOUT_SCHEME}{root / ref.removeprefix(RELATIVE_LAYOUT)}"
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
