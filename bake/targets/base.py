"""The target plug-in interface: what every target answers, so nothing else asks which it is.

In the spirit of Packer's own Builder/Artifact (a builder prepares without side effects,
then runs and returns an artifact that every consumer reads the same way), molecule's
drivers and mkosi's distributions. A target has two halves:

- :class:`Target`, plan time and pure: its `targets.NAME` config model, its Packer
  template and the template's context, the Packer plugin it needs, early checks of a plan,
  and how its artifacts are written into and read from build records;
- :class:`TargetSession`, bake time, opened by ``Target.session`` for one run (a Docker
  engine, VM tooling): the base to build on, Packer's inputs, the built artifact, a fresh
  instance to verify, keep or discard, evidence for attestations, the copy to a registry.

One generic loop (:mod:`bake.targets.loop`) drives every bakeable target; adding one is a
module implementing these two protocols plus one line in :data:`bake.targets.TARGETS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from bake.infra import process
from bake.infra.process import Call, Runner, Spawned

if TYPE_CHECKING:
    from bake.infra.packer import Event
    from bake.model import Model
    from bake.plan import Plan
    from bake.record import BuildRecord
    from bake.registry.backend import Registry
    from bake.targets.runs import Run
    from bake.ui.progress import Reporter
    from bake.verify.run import VerifyReport

Spawner = Callable[[Call, Path], Spawned]
TimedEvents = Sequence[tuple[float, "Event"]]  # each Packer event with when it arrived (monotonic)


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class ArtifactFile:
    """One file of an artifact made of files (a VM's disk, kernel, initrd)."""

    path: Path
    digest: str
    size: int


@dataclass(frozen=True)
class Artifact:
    """What one bake made, for every target alike.

    ``id`` says where it is (an engine's image ID, a disk's path); ``digest`` is its content
    digest (the reproducible OCI manifest digest of an image, the sha256 of a disk);
    ``files`` holds the files by role for artifacts made of files. ``meta`` keeps the
    target's own record fields, which only that target reads.
    """

    kind: str  # docker-image | qcow2 | …
    id: str
    digest: str | None = None
    files: Mapping[str, ArtifactFile] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def subjects(self, name: str) -> tuple[tuple[str, str], ...]:
        """in-toto subjects of a file artifact: ``NAME.ROLE`` and each file's digest."""
        return tuple((f"{name}.{role}", f.digest) for role, f in self.files.items())


@dataclass(frozen=True)
class Stored:
    """An artifact's bytes as a registry holds them (what :meth:`TargetSession.copy_to` did)."""

    digest: str  # what deployers pin
    subjects: tuple[tuple[str, str], ...]  # in-toto subjects: (name, digest), the artifact first
    ref: str | None = None  # REPO@sha256:… where a reference finds it; None where the digest does
    image_id: str | None = None  # the engine's image ID, for container images
    artifact_id: str | None = None  # a file name, an AMI id …
    files: Mapping[str, str] = field(default_factory=dict)  # role -> digest


@dataclass(frozen=True)
class Evidence:
    """What an artifact holds, for its attestations."""

    packages: str | None = None  # the dpkg status database (SBOM)
    licenses: str | None = None  # `License:` lines of /usr/share/doc/*/copyright (SBOM licences)
    files: Mapping[str, object] | None = None  # the file-manifest predicate (drift)
    # machine-readable /usr/share/doc/PKG/copyright files by package (SBOM licences)
    copyrights: Mapping[str, str] | None = None
    os_release: str | None = None  # /etc/os-release (the SBOM's `distro` qualifier)


# --------------------------------------------------------------------------- one bake


@dataclass(frozen=True)
class BakeOptions:
    force: bool = False  # rebuild even when a good record of the same key exists
    verify: bool = True
    normalize: bool = True  # make the artifact reproducible where the target can
    cold: bool = False  # bootstrap the base again and rebuild parents (no reuse at all)


@dataclass(frozen=True)
class Published:
    """A good build of a plan's bake key that a registry holds, as its verified metadata
    says (the caller checked signatures and the test gate): where its bytes are, by digest."""

    registry: str  # the registry's URL
    version: str  # e.g. 1.0.0+1
    digest: str  # what the registry's metadata pins
    ref: str | None = None
    image_id: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)  # role -> digest


# A registry lookup: the good, published build of a plan's bake key, or None.
FindPublished = Callable[["Plan"], Published | None]


@dataclass(frozen=True)
class BakeContext:
    """Runtime state of a bake (apart from the plan, which is pure)."""

    runner: Runner
    state: Path
    reporter: Reporter
    environ: Mapping[str, str]
    spawn: Spawner = process.spawn
    clock: Callable[[], datetime] = _utcnow
    # parents come from here when it holds their bake key (a registry); None: bake them
    published: FindPublished | None = None
    run: Run | None = None  # the run of `bake build` (its id and journal: bake.targets.runs)


@dataclass(frozen=True)
class Base:
    """What a bake builds on. Targets subclass it with what their Packer template needs."""

    record: Mapping[str, str]  # the build record's `parent` entry
    timings: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PackerInputs:
    """Packer's `-var`s and environment for one build, and where a failure's story is."""

    variables: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict)
    where: str = ""  # for progress: " in a tcg VM"
    console: Path | None = None  # a VM's serial console, shown when the build never connected


@dataclass(frozen=True)
class Built:
    """Packer's output, not yet verified. Targets subclass it with what they keep."""

    artifact: Artifact  # as a failed record shows it
    timings: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Verification:
    report: VerifyReport
    timings: Mapping[str, float] = field(default_factory=dict)
    evidence: Evidence | None = None  # what the verified instance showed, if taken there


@dataclass(frozen=True)
class Outcome:
    record: BuildRecord
    record_path: Path
    cached: bool
    parents: tuple[BuildRecord, ...] = ()


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Plugin:
    """Packer's `required_plugins` entry (only rendered for Packer versions that have them)."""

    name: str
    source: str
    version: str = ">= 1.0.0"


class TargetSession(Protocol):
    """A target at bake time, holding its tooling (an engine, VM helpers) for one run."""

    def present(self, artifact: Artifact) -> bool:
        """True while a recorded artifact is still there to reuse."""
        ...

    def fetch(self, plan: Plan, published: Published) -> Artifact:
        """A published build's exact bytes, here (pulled or downloaded by digest, and
        checked against it), to build on: a parent is never baked twice."""
        ...

    def base(self, plan: Plan, parent: Artifact | None, opts: BakeOptions) -> Base:
        """The parent's artifact, or a bootstrapped or pinned base."""
        ...

    def packer_inputs(self, plan: Plan, base: Base, work: Path) -> AbstractContextManager[PackerInputs]:
        """Packer's variables while the build runs (throwaway keys are gone after)."""
        ...

    def built(self, plan: Plan, events: TimedEvents, work: Path, opts: BakeOptions) -> Built:
        """The artifact Packer made (normalized, where the target does that)."""
        ...

    def adopt(self, plan: Plan, ref: str) -> Built:
        """An existing artifact named by the user (`bake verify --image REF`)."""
        ...

    def verify(self, plan: Plan, built: Built) -> Verification:
        """Run the plan's checks against a FRESH instance of the built artifact."""
        ...

    def keep(self, plan: Plan, built: Built, verification: Verification | None) -> Artifact:
        """Make a verified artifact the plan's good one (tag it, move it in place)."""
        ...

    def discard(self, plan: Plan, built: Built) -> None:
        """Throw an unverified artifact away: nothing may reuse or publish it."""
        ...

    def evidence(self, artifact: Artifact) -> Evidence:
        """Packages and file manifest of a good artifact, for its attestations."""
        ...

    def copy_to(self, artifact: Artifact, registry: Registry, name: str, tag: str) -> Stored:
        """Copy the artifact's bytes into the registry, by digest."""
        ...


@runtime_checkable
class ComparesBakes(Protocol):
    """Targets whose bakes are reproducible (`bake build --check-reproducible`)."""

    def differences(self, plan: Plan, first: Path, second: Path) -> list[str]:
        """What differs between the bakes kept in two state folders."""
        ...

    def restore(self, plan: Plan, artifact: Artifact) -> None:
        """Make `artifact` the one the plan's version names again."""
        ...


class Target(Protocol):
    """A target plug-in: plan-time declarations and the session factory."""

    name: ClassVar[str]
    config: ClassVar[type[Model]]  # its `targets.NAME` block
    template: ClassVar[str]  # packer_templates/NAME.pkr.hcl.j2
    plugin: ClassVar[Plugin]
    bakes: ClassVar[bool]  # False: render and validate only

    def template_context(self, plan: Plan) -> Mapping[str, object]:
        """What the target's template needs beyond the shared context (pure)."""
        ...

    def check(self, plan: Plan) -> None:
        """Refuse a plan this target cannot bake, before anything runs (pure)."""
        ...

    def session(self, ctx: BakeContext) -> AbstractContextManager[TargetSession]:
        """Open the target's tooling for one run (RecipeError/BakeError if it cannot bake)."""
        ...

    def artifact_to_json(self, artifact: Artifact) -> dict[str, Any]:
        """The artifact as a build record stores it."""
        ...

    def artifact_from_json(self, doc: Mapping[str, Any]) -> Artifact:
        """A build record's artifact."""
        ...

    def describe(self, artifact: Artifact) -> list[tuple[str, str]]:
        """Lines for people: (label, value)."""
        ...

    def file_names(self, out: Path) -> dict[str, Path]:
        """Where `bake fetch -o OUT` writes each file of a file artifact (role -> path)."""
        ...

    def usage(self, files: Mapping[str, Path]) -> str | None:
        """How to run fetched files (a boot command), if the target knows."""
        ...
