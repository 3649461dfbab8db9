"""Publish a good bake: copy the image by digest, attest it, record it in the registry.

Order matters for "a failed or interrupted publish leaves the registry as it was": image
bytes first (content-addressed, harmless if orphaned), then attestation blobs, then one
signed index update under the registry lock. A parent is published before its child, so
a child's `parent` always names a build the registry holds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bake import __version__, attest, sbom
from bake.attest import PublicKey, SigningKey
from bake.digest import canonical_json, sha256_bytes
from bake.docker import Engine
from bake.errors import BakeError
from bake.process import Runner
from bake.record import BuildRecord, find_good, record_path
from bake.registry import client
from bake.registry.backend import Registry
from bake.registry.model import Build, ImageDoc, Release, TargetOutput
from bake.registry.semver import parse as parse_semver

BUILDER_ID = f"https://bake.invalid/builder/bake@{__version__}"
BUILD_TYPE = "https://bake.invalid/build-types/packer-{target}/v1"
VM_ROLES = ("disk", "kernel", "initrd")  # what boots a qcow2 VM image (direct kernel boot)
FILES_PREDICATE = "https://bake.invalid/attestation/file-manifest/v1"  # = filemanifest.FILE_MANIFEST

# record → (ref by digest, digest); the ref is None where the digest alone finds the bytes
# (a VM disk in a dir: registry is the blob of that digest)
ImageCopier = Callable[[BuildRecord], tuple[str | None, str]]


@dataclass(frozen=True)
class PublishResult:
    name: str
    version: str  # full version with build number
    created: bool
    ref: str | None
    digest: str
    attestations: Mapping[str, str]
    registry: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "ref": self.ref,
            "digest": self.digest,
            "attestations": dict(self.attestations),
            "registry": self.registry,
        }


def find_by_key(doc: ImageDoc | None, bake_key: str) -> tuple[str, Build] | None:
    """The newest non-revoked build of an image with this bake key."""
    if doc is None:
        return None
    hits = [
        (v, b)
        for v, b in doc.versions.items()
        if b.bake_key == bake_key and v not in doc.revocations and b.version not in doc.revocations
    ]
    if not hits:
        return None
    return max(hits, key=lambda vb: (parse_semver(vb[1].version).precedence(), vb[1].build))


def image_tag(record: BuildRecord) -> str:
    # OCI tags allow no '+': version and bake key identify the bytes
    return f"{record.version}-{record.bake_key.removeprefix('sha256:')[:12]}"


def provenance(record: BuildRecord, parent_digest: str | None) -> dict[str, object]:
    deps = sorted((k, v) for k, v in record.inputs.items() if str(v).startswith("sha256:"))
    if parent_digest:
        deps.append((f"parent:{(record.parent or {}).get('name', '')}", parent_digest))
    finished = record.created
    return attest.slsa_provenance(
        build_type=BUILD_TYPE.format(target=record.target),
        external_parameters={
            "recipe": record.name,
            "version": record.version,
            "target": record.target,
            "bake_key": record.bake_key,
            "recipe_path": Path(record.recipe_path).name,
        },
        resolved_dependencies=deps,
        builder_id=BUILDER_ID,
        invocation_id=record.bake_key,
        started=finished,
        finished=finished,
        packer_version=record.packer_version,
    )


CHECKS_NAME = "verify-checks.json"


def test_results(record: BuildRecord) -> dict[str, object]:
    results = record.verify.get("results") or []
    passed = [str(r["title"]) for r in results if r.get("outcome") in ("passed", "skipped")]
    failed = [str(r["title"]) for r in results if r.get("outcome") not in ("passed", "skipped")]
    checks = canonical_json(list(record.verify.get("checks") or []))
    predicate = attest.test_result(
        result="PASSED" if not failed else "FAILED",
        passed=passed,
        failed=failed,
        configuration=[("recipe", record.bake_key), (CHECKS_NAME, sha256_bytes(checks))],
    )
    # the checks themselves, inline (an in-toto ResourceDescriptor may carry `content`),
    # so that `bake drift` can re-run exactly what verified the image
    config = predicate["configuration"]
    assert isinstance(config, list)
    for item in config:
        if isinstance(item, dict) and item.get("name") == CHECKS_NAME:
            item["content"] = base64.b64encode(checks).decode()
            item["mediaType"] = "application/json"
    return predicate


def checks_from_test_result(statement: Mapping[str, object]) -> list[dict[str, object]]:
    """The verify checks a test-result attestation carries (empty if none)."""
    predicate = statement.get("predicate")
    config = predicate.get("configuration") if isinstance(predicate, dict) else None
    for item in config if isinstance(config, list) else []:
        if (
            isinstance(item, dict)
            and item.get("name") == CHECKS_NAME
            and isinstance(item.get("content"), str)
        ):
            raw = base64.b64decode(item["content"])
            digest = item.get("digest", {})
            if isinstance(digest, dict) and sha256_bytes(raw) != f"sha256:{digest.get('sha256')}":
                raise BakeError("the verify checks in the test-result attestation do not match their digest")
            data = json.loads(raw)
            return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []
    return []


def dpkg_status(runner: Runner, engine: Engine, image: str) -> str:
    result = runner(
        engine.call("run", "--rm", "--network", "none", "--entrypoint", "cat", image, "/var/lib/dpkg/status")
    )
    return result.stdout


def vm_parts(record: BuildRecord) -> list[tuple[str, Path, str]]:
    """(role, path, digest) of a qcow2 record's disk, kernel and initrd, in VM_ROLES order."""
    art = record.artifact
    parts = {"disk": art, "kernel": art["kernel"], "initrd": art["initrd"]}
    return [(role, Path(str(parts[role]["path"])), str(parts[role]["digest"])) for role in VM_ROLES]


def vm_files(record: BuildRecord) -> dict[str, str]:
    """role -> digest of a qcow2 record's disk, kernel and initrd."""
    return {role: digest for role, _path, digest in vm_parts(record)}


def is_vm(record: BuildRecord) -> bool:
    return record.artifact.get("type") == "qcow2"


def attestations(
    record: BuildRecord,
    subjects: Sequence[tuple[str, str]],
    key: SigningKey,
    *,
    dpkg: str | None,
    files: Mapping[str, object] | None,
    parent_digest: str | None,
    now: str,
) -> dict[str, bytes]:
    """Signed DSSE envelopes (as bytes) by attestation kind; the first subject is the image."""
    subjects = list(subjects)
    subject = subjects[0]
    out = {
        "provenance": attest.sign_statement(
            attest.statement(subjects, attest.SLSA_PROVENANCE, provenance(record, parent_digest)), key
        ),
        "test-result": attest.sign_statement(
            attest.statement(subjects, attest.TEST_RESULT, test_results(record)), key
        ),
    }
    if dpkg is not None:
        bom = sbom.cyclonedx(
            sbom.parse_dpkg_status(dpkg), image_name=subject[0], image_digest=subject[1], timestamp=now
        )
        out["sbom"] = attest.sign_statement(attest.statement(subjects, sbom.CYCLONEDX, bom), key)
    if files is not None:
        out["files"] = attest.sign_statement(attest.statement(subjects, FILES_PREDICATE, files), key)
    return {k: canonical_json(v) for k, v in out.items()}


def publish_record(
    registry: Registry,
    record: BuildRecord,
    *,
    key: SigningKey,
    trusted: Sequence[PublicKey],
    copy_image: ImageCopier,
    state: Path,
    runner: Runner,
    engine: Engine | None,
    now: datetime,
    freshness: client.FreshnessState | None,
    collect_files: Callable[[str, Sequence[str]], Mapping[str, object]] | None = None,
) -> PublishResult:
    if not record.good:
        raise BakeError(
            f"{record.name} {record.version} ({record.bake_key[:19]}) is not a good bake: {record.error}",
            "only bakes that passed verification are published",
        )
    snapshot = client.read(registry, trusted, state=freshness, now=now)
    parent_spec: str | None = None
    parent_digest: str | None = None
    if record.parent and record.parent.get("bake_key"):
        pkey = str(record.parent["bake_key"])
        pname = str(record.parent["name"])
        hit = find_by_key(snapshot.get(pname), pkey)
        if hit is None:
            prec = find_good(state, pname, record.target, pkey)
            if prec is None:
                raise BakeError(
                    f"parent {pname} ({pkey[:19]}) of {record.name} is neither published nor baked here",
                    f"bake it first: bake build {pname}.yaml",
                )
            publish_record(
                registry,
                prec,
                key=key,
                trusted=trusted,
                copy_image=copy_image,
                state=state,
                runner=runner,
                engine=engine,
                now=now,
                freshness=freshness,
                collect_files=collect_files,
            )
            snapshot = client.read(registry, trusted, state=freshness, now=now)
            hit = find_by_key(snapshot.get(pname), pkey)
            assert hit is not None
        parent_spec = f"{pname}@{hit[0]}"
        parent_digest = hit[1].targets[record.target].digest if record.target in hit[1].targets else None

    ref, digest = copy_image(record)
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    files: dict[str, str] = {}
    image_id: str | None = None
    if is_vm(record):
        files = vm_files(record)
        subjects = [(f"{record.name}.{role}", files[role]) for role in VM_ROLES]
        status = record.artifact.get("dpkg_status")
        dpkg = Path(str(status)).read_text(encoding="utf-8") if status else None
        taken = record.artifact.get("file_manifest")  # taken from the verified VM
        manifest = json.loads(Path(str(taken)).read_bytes()) if taken else None
    else:
        if engine is None:
            raise BakeError(f"publishing the container image of {record.name} needs a Docker engine")
        image_id = str(record.artifact["image_id"])
        subjects = [((ref or record.name).split("@", 1)[0], digest)]
        dpkg = dpkg_status(runner, engine, image_id)
        volatile = list(record.artifact.get("volatile") or [])
        manifest = collect_files(image_id, volatile) if collect_files else None
    envelopes = attestations(
        record, subjects, key, dpkg=dpkg, files=manifest, parent_digest=parent_digest, now=stamp
    )
    blobs = {kind: registry.write_blob(data) for kind, data in envelopes.items()}
    release = Release(
        name=record.name,
        version=record.version,
        bake_key=record.bake_key,
        created=now,
        targets={
            record.target: TargetOutput(
                digest=digest,
                ref=ref,
                artifact_id=f"{record.name}.qcow2" if files else None,
                image_id=image_id,
                files=files,
            )
        },
        attestations=blobs,
        parent=parent_spec,
    )
    published = client.publish(registry, key, trusted, release, now=now, state=freshness)
    return PublishResult(
        name=record.name,
        version=published.version,
        created=published.created,
        ref=ref,
        digest=digest,
        attestations=blobs,
        registry=registry.url,
    )


def record_file(state: Path, record: BuildRecord) -> Path:
    return record_path(state, record.name, record.target, record.bake_key)


def envelope_of(data: bytes) -> dict[str, object]:
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise BakeError("attestation blob is not a DSSE envelope")
    return doc
