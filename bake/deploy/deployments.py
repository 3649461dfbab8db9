"""The deployment log: a signed record of every rollout, undo and failed attempt, kept in
the registry (pure: records, their signatures, the log's chain, what `--undo` returns to).

In the registry the log is made of TUF targets, listed by the images role's hash bins like
image documents and attestations, so a TUF client verifies them like the rest:

- ``deployments/index.json``: per service, how many records and the sha256 of the newest;
- ``deployments/SERVICE/000001.json`` …: one DSSE envelope per record.

A record is signed twice: its envelope by the key that made the change (a securesystemslib
signer; readers accept keys of the registry's images role, the ones that sign its
attestations), and its bytes by the TUF metadata (length and hash in a bin, then
snapshot and timestamp). Each record also names the sha256 of the one before it, so a
record cannot be dropped, reordered or swapped without the chain showing it.

Outcomes: ``succeeded`` (the service converged on ``to``), ``rolled-back`` (a new task
failed its health gate and Swarm went back to ``from``), ``failed`` (no convergence: a
new service is removed, an update rolled back) and ``refused`` (a trust check refused the
image before the service changed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from bake.attest.digest import canonical_json, sha256_bytes
from bake.attest.dsse import sign_envelope, verify_envelope
from bake.attest.keys import PublicKey, SigningKey
from bake.deploy.swarm import validate_service
from bake.errors import BakeError, TrustError
from bake.registry.client import Snapshot

SCHEMA = "bake.deployment/v1"
INDEX_SCHEMA = "bake.deployments/v1"
PAYLOAD_TYPE = "application/vnd.bake.deployment+json"
INDEX_PATH = "deployments/index.json"
ACTIONS = ("rollout", "undo", "reconcile", "replace")
OUTCOMES = ("succeeded", "rolled-back", "failed", "refused")
SUCCEEDED = "succeeded"
REASON_LIMIT = 2000

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEYID = re.compile(r"[0-9a-f]{64}")


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """Text fit for a record: control characters (newlines too) as spaces, bounded."""
    return _CONTROL.sub(" ", text).strip()[:limit]


@dataclass(frozen=True)
class Deployment:
    """One attempt to change a service (a record of the log)."""

    service: str
    action: str  # rollout | undo | reconcile | replace
    outcome: str  # succeeded | rolled-back | failed | refused
    at: str  # UTC, seconds
    spec: str  # what was asked for: web@stable, web@1.4.0+1, web@sha256:…
    image: str | None = None  # the image's name and version, once resolved
    version: str | None = None
    from_digest: str | None = None  # what the service ran before (None: a new service)
    to_digest: str | None = None  # what it was to run (None: refused before resolving)
    ref: str | None = None
    reason: str = ""
    cluster: str = ""  # the swarm's id: an undo only goes back within one swarm
    signer: str = ""  # key id of the envelope's signer
    seq: int = 0  # 1, 2, … per service
    previous: str | None = None  # sha256 of the previous record's envelope

    def to_json(self) -> dict[str, object]:
        return {
            "schema": SCHEMA,
            "seq": self.seq,
            "previous": self.previous,
            "service": self.service,
            "cluster": self.cluster,
            "action": self.action,
            "spec": self.spec,
            "image": self.image,
            "version": self.version,
            "from": self.from_digest,
            "to": self.to_digest,
            "ref": self.ref,
            "outcome": self.outcome,
            "reason": self.reason,
            "at": self.at,
            "signer": self.signer,
        }

    @classmethod
    def from_json(cls, doc: object, where: str) -> Deployment:
        """A record as its payload states it, every field checked (they reach terminals)."""
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise TrustError(f"{where} is not a deployment record ({SCHEMA})")

        def text(key: str, *, optional: bool = False, pattern: re.Pattern[str] | None = None) -> str | None:
            value = doc.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str) or _CONTROL.search(value) or len(value) > REASON_LIMIT:
                raise TrustError(f"{where}: {key} is not a line of text")
            if pattern is not None and not pattern.fullmatch(value):
                raise TrustError(f"{where}: {key} {value!r} is malformed")
            return value

        seq = doc.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise TrustError(f"{where}: seq must be a positive integer")
        action, outcome = text("action"), text("outcome")
        if action not in ACTIONS or outcome not in OUTCOMES:
            raise TrustError(f"{where}: unknown action {action!r} or outcome {outcome!r}")
        service = text("service") or ""
        try:
            validate_service(service)
        except BakeError:
            raise TrustError(f"{where}: {service!r} is not a service name") from None
        return cls(
            service=service,
            action=action,
            outcome=outcome,
            at=text("at", pattern=_TIME) or "",
            spec=text("spec") or "",
            image=text("image", optional=True),
            version=text("version", optional=True),
            from_digest=text("from", optional=True, pattern=_DIGEST),
            to_digest=text("to", optional=True, pattern=_DIGEST),
            ref=text("ref", optional=True),
            reason=text("reason") or "",
            cluster=text("cluster") or "",
            signer=text("signer", pattern=_KEYID) or "",
            seq=seq,
            previous=text("previous", optional=True, pattern=_DIGEST),
        )


@dataclass(frozen=True)
class Head:
    """Where a service's log stands: its number of records and the newest one's sha256."""

    count: int
    head: str


Index = Mapping[str, Head]


def record_path(service: str, seq: int) -> str:
    return f"deployments/{validate_service(service)}/{seq:06d}.json"


def encode_index(index: Index) -> bytes:
    services = {s: {"count": h.count, "head": h.head} for s, h in sorted(index.items())}
    return canonical_json({"schema": INDEX_SCHEMA, "services": services})


def decode_index(data: bytes) -> dict[str, Head]:
    where = INDEX_PATH
    try:
        doc = json.loads(data)
    except ValueError:
        raise TrustError(f"{where} is not JSON") from None
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("schema") != INDEX_SCHEMA or not isinstance(services, dict):
        raise TrustError(f"{where} is not a deployment index ({INDEX_SCHEMA})")
    out: dict[str, Head] = {}
    for service, head in services.items():
        count = head.get("count") if isinstance(head, dict) else None
        digest = head.get("head") if isinstance(head, dict) else None
        malformed = not isinstance(digest, str) or not _DIGEST.fullmatch(digest)
        if not isinstance(count, int) or count < 1 or malformed or not isinstance(digest, str):
            raise TrustError(f"{where}: the entry of {service!r} is malformed")
        try:
            validate_service(service)
        except BakeError:
            raise TrustError(f"{where}: {service!r} is not a service name") from None
        out[service] = Head(count, digest)
    return out


# --------------------------------------------------------------------------- writing


def sign_record(record: Deployment, key: SigningKey) -> bytes:
    envelope = sign_envelope(canonical_json(record.to_json()), key, PAYLOAD_TYPE)
    return canonical_json(envelope)


def append(index: Index, draft: Deployment, key: SigningKey) -> tuple[Deployment, dict[str, bytes]]:
    """The next record of ``draft.service``'s log, signed, and the target files that add it:
    the record and the updated index (for a registry transaction)."""
    head = index.get(draft.service)
    seq = head.count + 1 if head is not None else 1
    record = replace(
        draft,
        seq=seq,
        previous=head.head if head is not None else None,
        signer=key.keyid,
        reason=one_line(draft.reason),
    )
    Deployment.from_json(record.to_json(), "the new record")  # what is written can be read
    data = sign_record(record, key)
    updated = {**index, draft.service: Head(seq, sha256_bytes(data))}
    return record, {record_path(draft.service, seq): data, INDEX_PATH: encode_index(updated)}


# --------------------------------------------------------------------------- reading


def open_record(data: bytes, keys: Sequence[PublicKey], where: str) -> Deployment:
    """A record whose envelope a trusted key signed: the key its payload names."""
    try:
        envelope = json.loads(data)
    except ValueError:
        raise TrustError(f"{where} is not JSON") from None
    if not isinstance(envelope, dict):
        raise TrustError(f"{where} is not a DSSE envelope")
    try:
        payload = verify_envelope(envelope, keys, PAYLOAD_TYPE)
        record = Deployment.from_json(json.loads(payload), where)
        signer = [k for k in keys if k.keyid == record.signer]
        if not signer:
            raise TrustError(f"it names the signer {record.signer[:16]}, which is not a key of the registry")
        verify_envelope(envelope, signer, PAYLOAD_TYPE)
    except TrustError as e:
        raise TrustError(f"{where}: {e.message}", e.hint or "the deployment log was tampered with") from None
    except ValueError:
        raise TrustError(f"{where}: its payload is not JSON") from None
    return record


def verify_chain(
    service: str, head: Head, records: Sequence[bytes], keys: Sequence[PublicKey]
) -> list[Deployment]:
    """Every record of a service's log, checked in order: signed, numbered 1…n, each naming
    the one before, the last one the index's head."""
    out: list[Deployment] = []
    previous: str | None = None
    for seq, data in enumerate(records, 1):
        where = record_path(service, seq)
        record = open_record(data, keys, where)
        if record.service != service or record.seq != seq or record.previous != previous:
            raise TrustError(
                f"{where} is out of place in the deployment log of {service}",
                "the deployment log was tampered with: records were moved, dropped or replaced",
            )
        previous = sha256_bytes(data)
        out.append(record)
    if len(out) != head.count or previous != head.head:
        raise TrustError(
            f"the deployment log of {service} does not end where its index says",
            "the deployment log was tampered with",
        )
    return out


def read_index(snapshot: Snapshot) -> dict[str, Head]:
    data = snapshot.target(INDEX_PATH)
    return decode_index(data) if data is not None else {}


def read_log(snapshot: Snapshot, service: str, index: Index | None = None) -> list[Deployment]:
    """A service's records, oldest first (none if it has no log), verified."""
    index = read_index(snapshot) if index is None else index
    head = index.get(service)
    if head is None:
        return []
    blobs = []
    for seq in range(1, head.count + 1):
        data = snapshot.target(record_path(service, seq))
        if data is None:
            raise TrustError(f"{record_path(service, seq)} is missing from {snapshot.url}")
        blobs.append(data)
    return verify_chain(service, head, blobs, snapshot.attestation_keys)


# --------------------------------------------------------------------------- undo


def known_good(records: Sequence[Deployment], cluster: str) -> list[Deployment]:
    """The digests a service ran and converged on, as a stack (newest last): a rollout
    pushes its digest, an undo pops back to the one below."""
    stack: list[Deployment] = []
    for r in records:
        if r.cluster != cluster or r.outcome != SUCCEEDED or r.to_digest is None:
            continue
        if r.action == "undo" and len(stack) >= 2 and stack[-2].to_digest == r.to_digest:
            stack.pop()
        elif not stack or stack[-1].to_digest != r.to_digest:
            stack.append(r)
    return stack


def undo_target(records: Sequence[Deployment], cluster: str, current: str | None) -> Deployment:
    """The record of the digest an undo goes back to: the previous known-good one, or the
    newest known-good one when the service runs something bake did not deploy."""
    stack = known_good(records, cluster)
    if stack and stack[-1].to_digest == current:
        stack.pop()
    if not stack:
        service = records[-1].service if records else "this service"
        raise BakeError(
            f"nothing to undo: the deployment log of {service} has no earlier known-good digest "
            "in this swarm",
            "roll out a version by name instead: bake rollout NAME@VERSION --service SVC",
        )
    return stack[-1]
