"""Resolve a spec against a verified registry snapshot, and render the result.

Pure: a :class:`Snapshot` (already verified by :func:`bake.registry.client.read`) comes in,
a :class:`Resolution` goes out, rendered for people, tools, shells or Terraform.
Spec syntax and selector precedence: see :mod:`bake.registry.model`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bake.attest.digest import is_digest
from bake.errors import BakeError, RegistryError, TrustError
from bake.registry import semver
from bake.registry.client import Snapshot
from bake.registry.model import (
    LAYOUT_SCHEME,
    RELATIVE_LAYOUT,
    TargetOutput,
    did_you_mean,
    image_ref,
    output_problems,
    reference_ok,
    select,
    split_spec,
    validate_channel,
    validate_name,
)

FORMATS = ("text", "json", "env", "tfvars", "k8s")
_USAGE = 2


# --------------------------------------------------------------------------- resolve


@dataclass(frozen=True)
class Resolution:
    """A spec resolved against a verified snapshot, for one target."""

    name: str
    spec: str
    version: str  # full version, e.g. "1.4.0+2"
    channel: str | None
    target: str
    digest: str
    ref: str | None  # "REPO@sha256:…" when the target was pushed somewhere
    artifact_id: str | None
    image_id: str | None
    bake_key: str
    attestations: Mapping[str, str] = field(default_factory=dict)
    registry: str = ""
    serial: int = 0  # the snapshot version it was resolved against
    versions: Mapping[str, object] = field(default_factory=dict)  # root, timestamp, snapshot
    files: Mapping[str, str] = field(default_factory=dict)  # role -> digest (a VM's disk, kernel, …)
    # for a `dir:` registry's image (set by bake.deploy.verified.localize): the OCI layout by
    # digest, oci-layout://DIR@sha256:… (`ref` is then oci:DIR:TAG, which skopeo reads)
    layout_ref: str | None = None

    @property
    def transport_ref(self) -> str | None:
        """The ref with its containers-transports(5) prefix, as skopeo and podman take it:
        ``docker://HOST/REPO@sha256:…`` or ``oci:DIR:TAG``."""
        if self.ref is None or self.ref.startswith(("oci:", "oci-layout:", "docker://")):
            return self.ref
        return f"docker://{self.ref}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.spec,
            "version": self.version,
            "channel": self.channel,
            "target": self.target,
            "digest": self.digest,
            "ref": self.ref,
            "artifact_id": self.artifact_id,
            "image_id": self.image_id,
            "bake_key": self.bake_key,
            "attestations": dict(self.attestations),
            "registry": self.registry,
            "serial": self.serial,
            "metadata": dict(self.versions),
            **({"files": dict(self.files)} if self.files else {}),
            "transport_ref": self.transport_ref,
            **({"layout_ref": self.layout_ref} if self.layout_ref else {}),
        }


def _check_ref(ref: str, where: str) -> None:
    _, at, digest = ref.rpartition("@")
    if not at or not is_digest(digest):
        raise TrustError(
            f"{where} has the ref {ref!r}, which is not pinned by digest",
            "a tag can be moved to other bytes; republish the image with a REPO@sha256:… ref",
        )


def check_values(res: Resolution) -> None:
    """Every value a deployer gets must match its grammar (name, version, digest,
    reference, artifact id …) before any output format sees it: a newline in a signed ref
    would otherwise add a line to an env file (``LD_PRELOAD=…``), a ``\\r`` break a tfvars
    file. Refused, never escaped: what was signed is wrong."""
    where = image_ref(res.name, res.version)
    output = TargetOutput(res.digest, res.ref, res.artifact_id, res.image_id, res.files)
    problems = output_problems(output)
    if res.layout_ref is not None and not (
        res.layout_ref.startswith(LAYOUT_SCHEME) and reference_ok(res.layout_ref)
    ):
        problems.append("layout_ref must be oci-layout:PATH@sha256:…")
    if not semver.is_version(res.version):
        problems.append("the version must be a semantic version")
    if not all(is_digest(d) for d in res.attestations.values()):
        problems.append("attestations must be sha256 digests")
    try:
        validate_name(res.name)
        if res.channel is not None:
            validate_channel(res.channel)
    except BakeError as e:
        problems.append(e.message)
    if problems:
        raise TrustError(
            f"{where!r} ({res.target}) from {res.registry}: refused: {problems[0]}",
            "the registry's signed metadata holds a malformed value; nothing was printed",
        )


def resolve(snapshot: Snapshot, spec: str, target: str) -> Resolution:
    """``NAME@VERSION|CHANNEL|latest`` + target -> the verified build output to deploy.

    Refuses unknown names, versions, channels and targets (with a did-you-mean), revoked
    builds (saying why and when) and refs that name a tag without a digest.
    """
    name, selector = split_spec(spec)
    doc = snapshot.image(name)
    if selector in snapshot.unavailable:  # a protected channel whose keys have not signed yet
        raise snapshot.unavailable[selector]
    picked = select(doc, selector)
    where = image_ref(name, picked.version)
    output = picked.build.targets.get(target)
    if output is None:
        raise RegistryError(
            f"{where} was not built for target {target!r}",
            did_you_mean(target, picked.build.targets)
            or f"its targets: {', '.join(sorted(picked.build.targets))}",
        )
    res = Resolution(
        name=name,
        spec=spec,
        version=picked.version,
        channel=picked.channel,
        target=target,
        digest=output.digest,
        ref=output.ref,
        artifact_id=output.artifact_id,
        image_id=output.image_id,
        bake_key=picked.build.bake_key,
        attestations=dict(picked.build.attestations),
        registry=snapshot.url,
        serial=snapshot.serial,
        versions=snapshot.versions.to_json(),
        files=dict(output.files),
    )
    check_values(res)
    if output.ref is not None:
        _check_ref(output.ref, f"{where} ({target})")
    return res


# --------------------------------------------------------------------------- formats


def _hcl_string(value: str | None) -> str:
    if value is None:
        return "null"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    # "${" and "%{" start HCL template sequences inside quoted strings.
    return '"' + escaped.replace("${", "$${").replace("%{", "%%{") + '"'


def _kustomize(res: Resolution) -> str:
    """A kustomize ``images:`` entry: manifests that say ``image: NAME`` get the image by
    digest. JSON strings are YAML strings, so no value can break out of its field."""
    where = f"{image_ref(res.name, res.version)} ({res.target})"
    if res.ref is None or res.ref.startswith(RELATIVE_LAYOUT):
        raise BakeError(
            f"{where} has no reference a cluster can pull",
            "publish the image to an OCI registry (--registry oci://HOST:PORT/PREFIX) and resolve from it",
        )
    repository, _, digest = res.ref.rpartition("@")
    return (
        f"# {where}: kustomization.yaml, pinned by digest (bake resolve --format k8s)\n"
        "images:\n"
        f"- name: {json.dumps(res.name)}\n"
        f"  newName: {json.dumps(repository)}\n"
        f"  digest: {json.dumps(digest)}\n"
    )


def format_resolution(res: Resolution, fmt: str) -> str:
    """Render for people (``text``), tools (``json``), shells and env files (``env``:
    ``BAKE_IMAGE_REF=…``), Terraform (``tfvars``: ``image_ref``, ``image_digest``,
    ``artifact_id``) or kustomize (``k8s``: an ``images:`` entry). Ends with a newline."""
    check_values(res)
    if fmt == "json":
        return json.dumps(res.to_json(), indent=2, sort_keys=True) + "\n"
    if fmt == "env":
        pairs = {
            "BAKE_IMAGE_NAME": res.name,
            "BAKE_IMAGE_VERSION": res.version,
            "BAKE_IMAGE_TARGET": res.target,
            "BAKE_IMAGE_DIGEST": res.digest,
            "BAKE_IMAGE_REF": res.ref,
            "BAKE_ARTIFACT_ID": res.artifact_id,
        }
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in pairs.items() if v is not None)
    if fmt == "tfvars":
        return (
            f"image_ref = {_hcl_string(res.ref)}\n"
            f"image_digest = {_hcl_string(res.digest)}\n"
            f"artifact_id = {_hcl_string(res.artifact_id)}\n"
        )
    if fmt == "k8s":
        return _kustomize(res)
    if fmt == "text":
        rows = [
            ("image", image_ref(res.name, res.version)),
            ("channel", res.channel),
            ("target", res.target),
            ("digest", res.digest),
            ("ref", res.ref),
            ("artifact", res.artifact_id),
            *((f"{role}", digest) for role, digest in sorted(res.files.items())),
            ("bake key", res.bake_key),
            *((f"{kind}", digest) for kind, digest in sorted(res.attestations.items())),
            ("registry", f"{res.registry} (serial {res.serial})"),
        ]
        return "".join(f"{k + ':':<13} {v}\n" for k, v in rows if v is not None)
    raise BakeError(
        f"unknown output format {fmt!r}",
        did_you_mean(fmt, FORMATS) or f"formats: {', '.join(FORMATS)}",
        _USAGE,
    )


def find_by_digest(snapshot: Snapshot, spec: str, target: str) -> Resolution:
    """`REF@sha256:…` (or `NAME@sha256:…`): the published build with that digest."""
    ref, _, digest = spec.rpartition("@")
    wanted = ref.rsplit("/", 1)[-1].split(":", 1)[0]
    for name in snapshot.names():
        if wanted and name != wanted and not ref.endswith(name):
            continue
        doc = snapshot.image(name)
        for version, build in doc.versions.items():
            out = build.targets.get(target)
            if out is not None and out.digest == digest:
                return resolve(snapshot, f"{name}@{version}", target)
    raise TrustError(
        f"no published image has the digest {digest}", "check the reference, or pass NAME@VERSION"
    )
