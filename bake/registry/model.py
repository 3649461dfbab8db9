"""The registry manifest as data: frozen documents and the pure functions that change them.

Documents, serialized with canonical JSON, each a target file of the registry's TUF
metadata (bake.registry.layout):

* an **image document** per image name — its builds (``versions``), its ``channels``
  (with history) and its ``revocations``;
* a **channel document** per protected channel of an image: the same channel record,
  signed by that channel's own keys (k of n) rather than the online key;
* the **image index**: the sorted list of image names.

Builds are immutable. A release of version ``1.4.0`` becomes build ``1.4.0+N``: republishing
the same bake key with the same target digests returns the existing build; anything else
gets ``N = max + 1``.

Selectors (the part after ``NAME@``), in this order of precedence:

1. ``latest`` — the highest non-revoked *release* (pre-releases excluded; reach those by
   exact version or a channel). ``latest`` is reserved: no channel may use the name.
2. a semantic version — ``1.4.0+2`` is exactly that build; ``1.4.0`` is its latest
   non-revoked build.
3. a channel name — its current head.

The forms cannot collide: versions start with a digit, channel names with a letter.

Nothing here reads a clock, a file or the network: times come in as arguments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from bake.attest.digest import canonical_json
from bake.errors import BakeError, RegistryError, TrustError
from bake.registry import semver
from bake.textsafe import one_line

IMAGE_SCHEMA = "bake.image/v1"
CHANNEL_SCHEMA = "bake.channel/v1"
ATTESTATION_KINDS = ("provenance", "test-result", "sbom", "files")
LATEST = "latest"
LAYOUT_SCHEME = "oci-layout://"  # an OCI image layout, by absolute path
RELATIVE_LAYOUT = "oci-layout:"  # oci-layout:oci/NAME@sha256:… inside a dir: registry

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._/-]{0,126}[a-z0-9])?")
_CHANNEL = re.compile(r"[a-z][a-z0-9._-]{0,62}")
_TARGET = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no space: bake keys
# references, as Docker's reference grammar has them (domain, path components, tag, digest)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:]+\])(?::[0-9]{{1,5}})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DIGEST_SUFFIX = r"@sha256:[0-9a-f]{64}"
_TAG = r":\w[\w.-]{0,127}"
_REPO_REF = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?:{_TAG})?(?:{_DIGEST_SUFFIX})?")
# an OCI layout inside a dir: registry (relative), or by absolute path once localized
_LAYOUT_REF = re.compile(rf"oci-layout:(?!/)[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*{_DIGEST_SUFFIX}")
_LAYOUT_ABS_REF = re.compile(rf"oci-layout:///[^\x00-\x1f\x7f-\x9f@]*{_DIGEST_SUFFIX}")
# what a deployer gets for a dir: registry: skopeo's `oci:` transport, absolute path and tag
_OCI_DIR_REF = re.compile(rf"oci:/[^\x00-\x1f\x7f-\x9f@:]*{_TAG}")
_ARTIFACT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+@-]{0,254}")  # a file name, an AMI id
_KIND = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # attestation kinds, file roles
REASON_LIMIT = 1000  # characters of a revocation reason
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_USAGE = 2  # exit code for malformed input, as for an invalid recipe

Action = Literal["promote", "rollback"]


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class TargetOutput:
    """What one target of a build produced. ``digest`` is the artifact's sha256."""

    digest: str
    ref: str | None = None  # e.g. "registry.example/web@sha256:…"
    artifact_id: str | None = None  # e.g. an AMI id or a qcow2 file name
    image_id: str | None = None  # e.g. a docker image (config) id
    # the files a deployer fetches, by role, when the artifact is more than one file:
    # a qcow2 VM image is {"disk": …, "kernel": …, "initrd": …} (signed with its image document)
    files: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", _frozen(self.files))


@dataclass(frozen=True)
class Build:
    """One immutable build of an image: ``version`` + registry-assigned ``build`` number."""

    version: str
    build: int
    bake_key: str
    created: str
    parent: str | None
    targets: Mapping[str, TargetOutput]
    attestations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", _frozen(self.targets))
        object.__setattr__(self, "attestations", _frozen(self.attestations))

    @property
    def full_version(self) -> str:
        return f"{self.version}+{self.build}"


@dataclass(frozen=True)
class ChannelEntry:
    version: str
    at: str
    action: Action


@dataclass(frozen=True)
class Channel:
    current: str
    history: tuple[ChannelEntry, ...]


@dataclass(frozen=True)
class Revocation:
    reason: str
    at: str


@dataclass(frozen=True)
class ImageDoc:
    """Everything the registry knows about one image name."""

    name: str
    versions: Mapping[str, Build] = field(default_factory=dict)
    channels: Mapping[str, Channel] = field(default_factory=dict)
    revocations: Mapping[str, Revocation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", _frozen(self.versions))
        object.__setattr__(self, "channels", _frozen(self.channels))
        object.__setattr__(self, "revocations", _frozen(self.revocations))


@dataclass(frozen=True)
class Release:
    """A finished bake, as handed to :func:`add_build`. ``version`` has no ``+build``."""

    name: str
    version: str
    bake_key: str
    created: datetime
    targets: Mapping[str, TargetOutput]
    attestations: Mapping[str, str] = field(default_factory=dict)
    parent: str | None = None  # "NAME@VERSION+BUILD" of the image this one extends

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", _frozen(self.targets))
        object.__setattr__(self, "attestations", _frozen(self.attestations))


@dataclass(frozen=True)
class Change:
    """What a planned registry operation changes: the new image documents (by name) and
    one human-readable line per effect, for the CLI to print."""

    docs: Mapping[str, ImageDoc]
    summary: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "docs", _frozen(self.docs))


@dataclass(frozen=True)
class Selection:
    """The build a selector picked, and the channel it came through (if any)."""

    name: str
    version: str
    channel: str | None
    build: Build


# --------------------------------------------------------------------------- small helpers


def format_time(at: datetime) -> str:
    """RFC 3339 UTC with second precision: ``2024-05-01T12:00:00Z``."""
    if at.tzinfo is None:
        raise ValueError("a naive datetime has no time zone; pass an aware one (UTC)")
    return at.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise RegistryError(
            f"time {text!r} is not RFC 3339 UTC", "expected e.g. 2024-05-01T12:00:00Z"
        ) from None


def image_ref(name: str, version: str) -> str:
    return f"{name}@{version}"


def split_spec(spec: str) -> tuple[str, str]:
    """``"web@stable"`` -> ``("web", "stable")``; refuse anything else with a hint."""
    name, at, selector = spec.rpartition("@")
    if not at or not name or not selector:
        raise BakeError(
            f"{spec!r} is not an image spec",
            "write NAME@VERSION (1.4.0 or 1.4.0+2), NAME@CHANNEL or NAME@latest",
            _USAGE,
        )
    return name, selector


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the near misses of ``word`` in ``choices``, or None."""
    import difflib  # error path only: keeps start-up fast

    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None


def _check(ok: bool, message: str, hint: str | None = None) -> None:
    if not ok:
        raise BakeError(message, hint, _USAGE)


def validate_name(name: str) -> str:
    """An image name: it becomes a path (``images/NAME.json``, ``oci/NAME``, a repository),
    so no segment may be empty, ``.`` or ``..``."""
    _check(
        bool(_NAME.fullmatch(name)) and all(seg not in ("", ".", "..") for seg in name.split("/")),
        f"image name {name!r} is invalid",
        "use lowercase letters, digits and . _ - / (start and end with a letter or digit; "
        "no empty, . or .. segment between slashes)",
    )
    return name


def reference_ok(ref: str) -> bool:
    """``ref`` is a registry reference or an OCI-layout reference, and nothing else: no
    whitespace or control character, no ``.``/``..`` segment in a layout path."""
    if _REPO_REF.fullmatch(ref):
        return True
    if _LAYOUT_REF.fullmatch(ref):
        path = ref.removeprefix(RELATIVE_LAYOUT).rpartition("@")[0]
        return all(seg not in (".", "..") for seg in path.split("/"))
    if _OCI_DIR_REF.fullmatch(ref):
        path = ref.removeprefix("oci:").rpartition(":")[0]
        return all(seg not in (".", "..") for seg in path.split("/"))
    return bool(_LAYOUT_ABS_REF.fullmatch(ref))


def artifact_id_ok(artifact_id: str) -> bool:
    return bool(_ARTIFACT_ID.fullmatch(artifact_id))


def output_problems(output: TargetOutput) -> list[str]:
    """What in a target's output breaks its grammar (field and expectation)."""
    problems = []
    if not _DIGEST.fullmatch(output.digest):
        problems.append("digest must be sha256:<64 hex>")
    if output.ref is not None and not reference_ok(output.ref):
        problems.append(
            "ref must be a reference (HOST/REPO[:TAG]@sha256:…, oci-layout:PATH@sha256:… or oci:/PATH:TAG)"
        )
    if output.artifact_id is not None and not artifact_id_ok(output.artifact_id):
        problems.append("artifact_id must be letters, digits and . _ : / + @ -")
    if output.image_id is not None and not _DIGEST.fullmatch(output.image_id):
        problems.append("image_id must be sha256:<64 hex>")
    for role, digest in output.files.items():
        if not (_KIND.fullmatch(role) and _DIGEST.fullmatch(digest)):
            problems.append("files must map roles to sha256:<64 hex>")
    return problems


def validate_channel(channel: str) -> str:
    _check(
        bool(_CHANNEL.fullmatch(channel)) and channel != LATEST,
        f"channel name {channel!r} is invalid",
        "start with a lowercase letter, then letters, digits, . _ -; 'latest' is reserved",
    )
    return channel


def _parse_core(version: str) -> semver.Version:
    parsed = semver.parse(version)
    _check(
        not parsed.build,
        f"release version {version!r} carries build metadata",
        f"publish {parsed.core}: the registry numbers builds itself ({parsed.core}+1, +2 …)",
    )
    return parsed


def _sort_key(build: Build) -> tuple[Any, ...]:
    return (*semver.parse(build.version).precedence(), build.build)


# --------------------------------------------------------------------------- queries


def new_image_doc(name: str) -> ImageDoc:
    return ImageDoc(name=validate_name(name))


def is_revoked(doc: ImageDoc, version: str) -> bool:
    return version in doc.revocations


def builds_of(doc: ImageDoc, version: str) -> list[Build]:
    """Every build of the version core ``version`` (``1.4.0``), oldest build first."""
    return sorted((b for b in doc.versions.values() if b.version == version), key=lambda b: b.build)


def _revoked_error(doc: ImageDoc, version: str, via: str | None = None) -> TrustError:
    record = doc.revocations[version]
    ref = image_ref(doc.name, version)
    what = f"{image_ref(doc.name, via)} points to {ref}, which" if via else ref
    return TrustError(
        f"{what} was revoked at {record.at}: {one_line(record.reason)}",
        f"roll the channel back (bake rollback {doc.name} {via}) or pick another version"
        if via
        else "pick another version; revocations are permanent",
    )


def _unknown_version(doc: ImageDoc, version: str) -> RegistryError:
    newest = [b.full_version for b in sorted(doc.versions.values(), key=_sort_key)[-5:]]
    return RegistryError(
        f"{image_ref(doc.name, version)} is not in the registry",
        did_you_mean(version, doc.versions)
        or f"newest versions: {', '.join(newest) or 'none published yet'}",
    )


def find_build(doc: ImageDoc, version: str) -> Build:
    """``1.4.0+2`` -> that build; ``1.4.0`` -> its latest non-revoked build.

    Raises RegistryError when unknown, TrustError when revoked.
    """
    parsed = semver.parse(version)
    number = semver.build_number(parsed)
    if number is not None:
        build = doc.versions.get(version)
        if build is None:
            raise _unknown_version(doc, version)
        if is_revoked(doc, version):
            raise _revoked_error(doc, version)
        return build
    candidates = builds_of(doc, parsed.core)
    if not candidates:
        raise _unknown_version(doc, version)
    live = [b for b in candidates if not is_revoked(doc, b.full_version)]
    if not live:
        raise _revoked_error(doc, candidates[-1].full_version)
    return live[-1]


def select(doc: ImageDoc, selector: str) -> Selection:
    """Resolve a selector (see the module docstring for precedence) to a live build."""
    if selector == LATEST:
        live = [
            b
            for b in doc.versions.values()
            if not is_revoked(doc, b.full_version) and not semver.parse(b.version).prerelease
        ]
        if not live:
            raise RegistryError(
                f"{image_ref(doc.name, LATEST)}: no release that is not revoked",
                "pre-releases are left out of 'latest': ask for one by version or channel",
            )
        best = max(live, key=_sort_key)
        return Selection(doc.name, best.full_version, None, best)
    if semver.is_version(selector):
        build = find_build(doc, selector)
        return Selection(doc.name, build.full_version, None, build)
    channel = doc.channels.get(selector)
    if channel is None:
        if not _CHANNEL.fullmatch(selector):
            raise BakeError(
                f"{image_ref(doc.name, selector)}: {selector!r} is neither a version nor a channel name",
                "write NAME@VERSION (1.4.0 or 1.4.0+2), NAME@CHANNEL or NAME@latest",
                _USAGE,
            )
        raise RegistryError(
            f"{doc.name} has no channel {selector!r}",
            did_you_mean(selector, [*doc.channels, LATEST])
            or f"channels: {', '.join(sorted(doc.channels)) or 'none yet'}; or use {LATEST}",
        )
    if is_revoked(doc, channel.current):
        raise _revoked_error(doc, channel.current, via=selector)
    return Selection(doc.name, channel.current, selector, doc.versions[channel.current])


# --------------------------------------------------------------------------- mutations


def _validate_release(release: Release) -> semver.Version:
    validate_name(release.name)
    parsed = _parse_core(release.version)
    _check(bool(release.bake_key), f"{release.name} {release.version}: empty bake key")
    _check(bool(release.targets), f"{release.name} {release.version}: no targets")
    for target, output in release.targets.items():
        _check(
            bool(_TARGET.fullmatch(target)),
            f"target name {target!r} is invalid",
            "use lowercase letters, digits and . _ -",
        )
        _check(
            bool(_DIGEST.fullmatch(output.digest)),
            f"targets.{target}.digest {output.digest!r} is not sha256:<64 hex>",
        )
        problems = output_problems(output)
        _check(not problems, f"targets.{target}.{problems[0] if problems else ''}")
    for kind, digest in release.attestations.items():
        _check(
            kind in ATTESTATION_KINDS,
            f"attestation kind {kind!r} is unknown",
            did_you_mean(kind, ATTESTATION_KINDS) or f"kinds: {', '.join(ATTESTATION_KINDS)}",
        )
        _check(
            bool(_DIGEST.fullmatch(digest)),
            f"attestations.{kind} {digest!r} is not sha256:<64 hex>",
        )
    if release.parent is not None:
        _check(_is_parent_ref(release.parent), f"parent {release.parent!r} is not NAME@VERSION+BUILD")
    return parsed


def add_build(doc: ImageDoc, release: Release) -> tuple[ImageDoc, str]:
    """Record ``release`` as a build; returns the new document and the full version.

    Idempotent: the same version with the same bake key and the same target digests
    returns ``doc`` unchanged and the existing build (even a revoked one: republishing
    identical bytes must not bring them back).
    """
    parsed = _validate_release(release)
    _check(
        release.name == doc.name,
        f"release of {release.name!r} cannot go into the document of {doc.name!r}",
    )
    digests = {target: out.digest for target, out in release.targets.items()}
    same_version = builds_of(doc, parsed.core)
    for build in same_version:
        if build.bake_key == release.bake_key and digests == {
            target: out.digest for target, out in build.targets.items()
        }:
            return doc, build.full_version
    build = Build(
        version=parsed.core,
        build=max((b.build for b in same_version), default=0) + 1,
        bake_key=release.bake_key,
        created=format_time(release.created),
        parent=release.parent,
        targets=release.targets,
        attestations=release.attestations,
    )
    return replace(doc, versions={**doc.versions, build.full_version: build}), build.full_version


def promote(doc: ImageDoc, source: str, channel: str, *, at: datetime) -> ImageDoc:
    """Point ``channel`` at the build ``source`` selects (a version, ``latest`` or another
    channel). Refuses unknown and revoked builds; promoting the current head is a no-op."""
    validate_channel(channel)
    picked = select(doc, source)
    current = doc.channels.get(channel)
    if current is not None and current.current == picked.version:
        return doc
    history = current.history if current else ()
    entry = ChannelEntry(picked.version, format_time(at), "promote")
    updated = Channel(current=picked.version, history=(*history, entry))
    return replace(doc, channels={**doc.channels, channel: updated})


def _stack(channel: Channel) -> list[str]:
    """Replay the history as a stack: promote pushes, rollback pops back to its target.

    Rolling back twice therefore goes two steps back, never forth again to the version
    the first rollback left.
    """
    stack: list[str] = []
    for entry in channel.history:
        if entry.action == "rollback" and entry.version in stack:
            del stack[len(stack) - stack[::-1].index(entry.version) :]
        elif not stack or stack[-1] != entry.version:
            stack.append(entry.version)
    return stack


def rollback(doc: ImageDoc, channel: str, *, at: datetime) -> ImageDoc:
    """Move ``channel`` back to its previous head that is not revoked and differs from the
    current one (``doc.channels[channel].current`` afterwards says which)."""
    found = doc.channels.get(channel)
    if found is None:
        raise RegistryError(f"{doc.name} has no channel {channel!r}", did_you_mean(channel, doc.channels))
    stack = _stack(found)
    while stack and (stack[-1] == found.current or is_revoked(doc, stack[-1])):
        stack.pop()
    if not stack:
        raise RegistryError(
            f"{image_ref(doc.name, channel)} has no earlier version to roll back to",
            f"promote a known-good version instead: bake promote {doc.name}@VERSION {channel}",
        )
    target = stack[-1]
    entry = ChannelEntry(target, format_time(at), "rollback")
    updated = Channel(current=target, history=(*found.history, entry))
    return replace(doc, channels={**doc.channels, channel: updated})


def revoke(doc: ImageDoc, version: str, reason: str, *, at: datetime) -> ImageDoc:
    """Revoke ``1.4.0+2`` (that build) or ``1.4.0`` (every build of it). Permanent; a
    build already revoked keeps its first reason. Channels are not moved: resolving a
    channel whose head is revoked fails until someone rolls it back or promotes."""
    _check(bool(reason.strip()), "a revocation needs a reason")
    _check(
        len(reason) <= REASON_LIMIT and one_line(reason, REASON_LIMIT) == reason,
        f"a revocation reason is one line of printable text, at most {REASON_LIMIT} characters",
        "deployers see it in their terminals and logs: no newlines or control characters",
    )
    parsed = semver.parse(version)
    if semver.build_number(parsed) is not None:
        if version not in doc.versions:
            raise _unknown_version(doc, version)
        targets = [version]
    else:
        targets = [b.full_version for b in builds_of(doc, parsed.core)]
        if not targets:
            raise _unknown_version(doc, version)
    record = Revocation(reason=reason.strip(), at=format_time(at))
    fresh = {v: record for v in targets if v not in doc.revocations}
    if not fresh:
        return doc
    return replace(doc, revocations={**doc.revocations, **fresh})


def cascade(
    docs: Mapping[str, ImageDoc], revoked: Iterable[str], *, at: datetime
) -> tuple[dict[str, ImageDoc], list[str]]:
    """Revoke, transitively, every build whose ``parent`` is one of ``revoked``
    (``NAME@VERSION+BUILD`` refs). Returns the changed documents and the affected refs."""
    children: dict[str, list[tuple[str, str]]] = {}
    for name, doc in docs.items():
        for build in doc.versions.values():
            if build.parent is not None:
                children.setdefault(build.parent, []).append((name, build.full_version))
    changed: dict[str, ImageDoc] = {}
    affected: list[str] = []
    frontier = list(revoked)
    seen = set(frontier)
    while frontier:
        parent = frontier.pop()
        for name, version in children.get(parent, ()):
            ref = image_ref(name, version)
            if ref in seen:
                continue
            seen.add(ref)
            doc = changed.get(name, docs[name])
            if not is_revoked(doc, version):
                changed[name] = revoke(doc, version, f"parent {parent} was revoked", at=at)
                affected.append(ref)
            frontier.append(ref)
    return changed, sorted(affected)


# --------------------------------------------------------------------------- JSON


def image_doc_to_json(doc: ImageDoc) -> dict[str, Any]:
    return {
        "schema": IMAGE_SCHEMA,
        "name": doc.name,
        "versions": {
            key: {
                "version": b.version,
                "build": b.build,
                "bake_key": b.bake_key,
                "created": b.created,
                "parent": b.parent,
                "targets": {t: _target_json(o) for t, o in b.targets.items()},
                "attestations": dict(b.attestations),
            }
            for key, b in doc.versions.items()
        },
        "channels": {name: channel_to_json(ch) for name, ch in doc.channels.items()},
        "revocations": {v: {"reason": r.reason, "at": r.at} for v, r in doc.revocations.items()},
    }


def encode_image_doc(doc: ImageDoc) -> bytes:
    return canonical_json(image_doc_to_json(doc))


def channel_to_json(ch: Channel) -> dict[str, Any]:
    return {
        "current": ch.current,
        "history": [{"version": e.version, "at": e.at, "action": e.action} for e in ch.history],
    }


def encode_channel_doc(name: str, channel: str, ch: Channel) -> bytes:
    """A protected channel of an image, as its own signed target."""
    return canonical_json({"schema": CHANNEL_SCHEMA, "name": name, "channel": channel, **channel_to_json(ch)})


def encode_names(names: Iterable[str]) -> bytes:
    return canonical_json(sorted(set(names)))


def _target_json(o: TargetOutput) -> dict[str, Any]:
    out: dict[str, Any] = {
        "digest": o.digest,
        "ref": o.ref,
        "artifact_id": o.artifact_id,
        "image_id": o.image_id,
    }
    if o.files:  # absent for single-file artifacts: their documents stay as they were
        out["files"] = dict(o.files)
    return out


class _Fields:
    """Typed access to untrusted JSON; errors name the document and the field path."""

    def __init__(self, what: str) -> None:
        self.what = what

    def fail(self, path: str, expected: str) -> RegistryError:
        return RegistryError(
            f"malformed {self.what}: {path} must be {expected}",
            "the registry was written by an incompatible or broken publisher",
        )

    def obj(self, value: object, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "an object")
        return value

    def text(self, obj: dict[str, Any], key: str, path: str) -> str:
        value = obj.get(key)
        if not isinstance(value, str):
            raise self.fail(f"{path}.{key}", "a string")
        return value

    def opt_text(self, obj: dict[str, Any], key: str, path: str) -> str | None:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(f"{path}.{key}", "a string or null")
        return value

    def count(self, obj: dict[str, Any], key: str, path: str) -> int:
        value = obj.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(f"{path}.{key}", "a non-negative integer")
        return value

    def textmap(self, obj: dict[str, Any], key: str, path: str) -> dict[str, str]:
        value = self.obj(obj.get(key), f"{path}.{key}")
        if not all(isinstance(v, str) for v in value.values()):
            raise self.fail(f"{path}.{key}", "an object of strings")
        return value

    def check(self, ok: bool, path: str, expected: str) -> None:
        if not ok:
            raise self.fail(path, expected)

    def keys(self, obj: dict[str, Any], pattern: re.Pattern[str], path: str, expected: str) -> None:
        for key in obj:
            self.check(bool(pattern.fullmatch(key)), f"{path}.{one_line(key, 80)}", expected)

    def time(self, obj: dict[str, Any], key: str, path: str) -> str:
        value = self.text(obj, key, path)
        try:
            parse_time(value)
        except RegistryError:
            raise self.fail(f"{path}.{key}", "an RFC 3339 UTC time") from None
        return value

    def schema(self, obj: dict[str, Any], expected: str) -> None:
        if obj.get("schema") != expected:
            raise RegistryError(
                f"{self.what} has schema {obj.get('schema')!r}, expected {expected!r}",
                "upgrade bake to read this registry",
            )


def _loads(data: bytes, what: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{what} is not valid JSON") from None


def decode_image_doc(data: bytes, *, name: str) -> ImageDoc:
    f = _Fields(f"image document of {name!r}")
    top = f.obj(_loads(data, f.what), "$")
    f.schema(top, IMAGE_SCHEMA)
    versions: dict[str, Build] = {}
    # every structured field is checked against its grammar: they reach file names, shell
    # variables, Terraform files and terminals (free text, a revocation reason, is escaped)
    for key, raw in f.obj(top.get("versions"), "versions").items():
        f.check(semver.is_version(key), f"versions.{one_line(key, 80)}", "a version")
        path = f"versions.{key}"
        b = f.obj(raw, path)
        raw_targets = f.obj(b.get("targets"), f"{path}.targets")
        f.keys(raw_targets, _TARGET, f"{path}.targets", "target names")
        targets = {t: _target_output(f, o, f"{path}.targets.{t}") for t, o in raw_targets.items()}
        attestations = f.textmap(b, "attestations", path)
        f.keys(attestations, _KIND, f"{path}.attestations", "attestation kinds")
        f.check(all(_DIGEST.fullmatch(d) for d in attestations.values()), f"{path}.attestations", "digests")
        build = Build(
            version=f.text(b, "version", path),
            build=f.count(b, "build", path),
            bake_key=f.text(b, "bake_key", path),
            created=f.time(b, "created", path),
            parent=f.opt_text(b, "parent", path),
            targets=targets,
            attestations=attestations,
        )
        f.check(bool(_TOKEN.fullmatch(build.bake_key)), f"{path}.bake_key", "a key without spaces")
        f.check(build.parent is None or _is_parent_ref(build.parent), f"{path}.parent", "NAME@VERSION+BUILD")
        if build.full_version != key:
            raise f.fail(path, f"the build {build.full_version}")
        versions[key] = build
    channels: dict[str, Channel] = {}
    raw_channels = f.obj(top.get("channels"), "channels")
    f.keys(raw_channels, _CHANNEL, "channels", "channel names")
    for key, raw in raw_channels.items():
        channels[key] = _channel(f, f.obj(raw, f"channels.{key}"), f"channels.{key}")
        if channels[key].current not in versions:
            raise f.fail(f"channels.{key}.current", "a known version")
    raw_revocations = f.obj(top.get("revocations"), "revocations")
    f.check(all(semver.is_version(v) for v in raw_revocations), "revocations", "an object keyed by version")
    revocations = {
        v: Revocation(
            reason=f.text(f.obj(r, f"revocations.{v}"), "reason", f"revocations.{v}"),
            at=f.time(r, "at", f"revocations.{v}"),
        )
        for v, r in raw_revocations.items()
    }
    doc_name = f.text(top, "name", "$")
    if doc_name != name:
        raise TrustError(
            f"the signed metadata binds {name!r} to the image document of {doc_name!r}",
            "the registry was tampered with or written by a broken publisher",
        )
    return ImageDoc(name=doc_name, versions=versions, channels=channels, revocations=revocations)


def _channel(f: _Fields, c: dict[str, Any], path: str) -> Channel:
    history = c.get("history")
    if not isinstance(history, list):
        raise f.fail(f"{path}.history", "a list")
    entries = []
    for i, raw_entry in enumerate(history):
        e = f.obj(raw_entry, f"{path}.history[{i}]")
        action = e.get("action")
        if action not in ("promote", "rollback"):
            raise f.fail(f"{path}.history[{i}].action", "'promote' or 'rollback'")
        version = f.text(e, "version", f"{path}.history[{i}]")
        f.check(semver.is_version(version), f"{path}.history[{i}].version", "a version")
        entries.append(ChannelEntry(version, f.time(e, "at", f"{path}.history[{i}]"), action))
    current = f.text(c, "current", path)
    f.check(semver.is_version(current), f"{path}.current", "a version")
    return Channel(current=current, history=tuple(entries))


def _target_output(f: _Fields, raw: object, path: str) -> TargetOutput:
    """A target's output as stored. Its ref and artifact id are checked against their
    grammars again before any deployer sees them (bake.deploy.resolve)."""
    o = f.obj(raw, path)
    files = f.textmap(o, "files", path) if "files" in o else {}
    f.keys(files, _KIND, f"{path}.files", "file roles")
    out = TargetOutput(
        digest=f.text(o, "digest", path),
        ref=f.opt_text(o, "ref", path),
        artifact_id=f.opt_text(o, "artifact_id", path),
        image_id=f.opt_text(o, "image_id", path),
        files=files,
    )
    f.check(bool(_DIGEST.fullmatch(out.digest)), f"{path}.digest", "sha256:<64 hex>")
    f.check(all(_DIGEST.fullmatch(d) for d in files.values()), f"{path}.files", "digests")
    return out


def _is_parent_ref(ref: str) -> bool:
    name, _, version = ref.rpartition("@")
    ok = bool(_NAME.fullmatch(name)) and semver.is_version(version)
    return ok and semver.build_number(semver.parse(version)) is not None


def decode_channel_doc(data: bytes, *, name: str, channel: str) -> Channel:
    f = _Fields(f"channel {channel!r} of {name!r}")
    top = f.obj(_loads(data, f.what), "$")
    f.schema(top, CHANNEL_SCHEMA)
    if (top.get("name"), top.get("channel")) != (name, channel):
        raise TrustError(
            f"the signed metadata binds channel {channel!r} of {name!r} to the document of "
            f"{top.get('channel')!r} of {top.get('name')!r}",
            "the registry was tampered with or written by a broken publisher",
        )
    return _channel(f, top, "$")


def decode_names(data: bytes) -> list[str]:
    names = _loads(data, "the image index")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RegistryError("the image index is not a list of names")
    return [validate_name(n) for n in names]


def absolute_ref(ref: str | None, registry_url: str) -> str | None:
    """A `dir:` registry stores layout refs relative to its root (so the folder can be
    copied or moved); whoever uses one gets it absolute."""
    if ref and ref.startswith(RELATIVE_LAYOUT) and not ref.startswith(LAYOUT_SCHEME):
        root = Path(registry_url.removeprefix("dir:")).resolve()
        return f"{LAYOUT_SCHEME}{root / ref.removeprefix(RELATIVE_LAYOUT)}"
    return ref
