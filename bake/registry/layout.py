"""What a bake registry is, as a TUF repository: roles, target paths, file names, policy.

Roles (keys and thresholds in root.json; delegations in targets metadata):

- ``root``       offline keys (k of n): who may sign each top-level role;
- ``targets``    offline keys: the registry's policy and the delegations below;
- ``snapshot``, ``timestamp``  the online key: every publish; the timestamp expires soon;
- ``channel-C``  a protected channel C, delegated from targets with its own keys and
                 threshold (e.g. moving ``prod`` needs 2 of 3): paths ``channels/C/*``,
                 terminating, so no other role can speak for it;
- ``images``     the online key, delegated every other path; it hands them on to
                 ``bins-00`` … ``bins-ff`` by the hash of the path (succinct hash bins, as
                 python-tuf's repository examples do), so no metadata file grows with the
                 whole registry and a resolve reads a few small ones.

Targets (each a file with length and sha256 in signed metadata):

- ``policy.json``                               what resolve requires (targets role);
- ``index.json``                                the image names (bins);
- ``images/NAME.json``                          an image document: builds, unprotected
                                                channels, revocations (bins);
- ``attestations/NAME/VERSION/KIND.json``       a DSSE envelope (bins);
- ``channels/C/NAME.json``                      a protected channel of an image (channel-C).

Files are stored with consistent snapshots: ``metadata/N.ROLE.json`` (the timestamp
unversioned) and ``targets/DIR/SHA256.BASENAME``, so a reader never sees a mix of two
repository states. Pure: no clock, no file, no network.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from datetime import timedelta

from bake.attest.digest import canonical_json
from bake.errors import BakeError, RegistryError

ROOT, TARGETS, SNAPSHOT, TIMESTAMP = "root", "targets", "snapshot", "timestamp"
IMAGES = "images"
BINS = "bins"
BIN_BITS = 8  # 256 bins
CHANNEL_ROLE = "channel-"
POLICY_PATH = "policy.json"
INDEX_PATH = "index.json"
PENDING = "pending."  # metadata waiting for more signatures: pending.ROLE.json
HEX = "0123456789abcdef"

LIFETIMES = {
    ROOT: timedelta(days=365),
    TARGETS: timedelta(days=365),
    IMAGES: timedelta(days=365),
    BINS: timedelta(days=90),
    CHANNEL_ROLE: timedelta(days=365),
    SNAPSHOT: timedelta(days=30),
}
POLICY_SCHEMA = "bake.policy/v1"
KNOWN_KINDS = ("provenance", "test-result", "sbom", "files")


def lifetime(role: str, policy: Policy) -> timedelta:
    if role == TIMESTAMP:
        return timedelta(hours=policy.timestamp_hours)
    if role.startswith(CHANNEL_ROLE):
        return LIFETIMES[CHANNEL_ROLE]
    if role.startswith(BINS + "-"):
        return LIFETIMES[BINS]
    return LIFETIMES[role]


def image_path(name: str) -> str:
    return f"images/{name}.json"


def attestation_path(name: str, version: str, kind: str) -> str:
    return f"attestations/{name}/{version}/{kind}.json"


def channel_path(channel: str, name: str) -> str:
    return f"channels/{channel}/{name}.json"


def channel_role(channel: str) -> str:
    return f"{CHANNEL_ROLE}{channel}"


def metadata_file(role: str, version: int) -> str:
    """The stored name of a role's metadata (consistent snapshots)."""
    return f"{TIMESTAMP}.json" if role == TIMESTAMP else f"{version}.{role}.json"


def pending_file(role: str) -> str:
    return f"{PENDING}{role}.json"


def stored_target(path: str, sha256_hex: str) -> str:
    """Where a target's bytes are kept: its basename prefixed with its hash."""
    folder, base = posixpath.split(path)
    return posixpath.join(folder, f"{sha256_hex}.{base}") if folder else f"{sha256_hex}.{base}"


def hash_of_stored(stored: str) -> str:
    """The sha256 (hex) a stored target's name carries."""
    prefix = posixpath.basename(stored).split(".", 1)[0]
    if len(prefix) != 64 or any(c not in HEX for c in prefix):
        raise RegistryError(f"{stored!r} is not a stored target name")
    return prefix


@dataclass(frozen=True)
class Policy:
    """The registry's rules, in signed metadata (``policy.json``, targets role)."""

    required: tuple[str, ...] = ("provenance", "test-result")  # attestations resolve insists on
    timestamp_hours: float = 24.0  # how long a timestamp stays fresh; `bake refresh` renews it
    extra: dict[str, object] = field(default_factory=dict)  # fields of later versions, kept

    def to_bytes(self) -> bytes:
        return canonical_json(
            {
                "schema": POLICY_SCHEMA,
                "required_attestations": list(self.required),
                "timestamp_hours": self.timestamp_hours,
                **self.extra,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "policy.json") -> Policy:
        try:
            doc = json.loads(data)
        except ValueError:
            raise RegistryError(f"{where} is not JSON") from None
        if not isinstance(doc, dict) or doc.get("schema") != POLICY_SCHEMA:
            raise RegistryError(f"{where} is not a bake policy (schema {POLICY_SCHEMA})")
        required = doc.get("required_attestations")
        hours = doc.get("timestamp_hours")
        if not isinstance(required, list) or not all(isinstance(k, str) for k in required):
            raise RegistryError(f"{where}: required_attestations must be a list of kinds")
        if not isinstance(hours, int | float) or hours <= 0:
            raise RegistryError(f"{where}: timestamp_hours must be a positive number")
        extra = {
            k: v for k, v in doc.items() if k not in ("schema", "required_attestations", "timestamp_hours")
        }
        return cls(tuple(required), float(hours), extra)

    def validated(self) -> Policy:
        unknown = [k for k in self.required if k not in KNOWN_KINDS]
        if unknown:
            raise BakeError(
                f"unknown attestation kind {unknown[0]!r}", f"kinds: {', '.join(KNOWN_KINDS)}", exit_code=2
            )
        if self.timestamp_hours <= 0:
            raise BakeError("the timestamp lifetime must be positive", exit_code=2)
        return self
