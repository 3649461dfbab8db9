"""The docker target at bake time: one Docker engine for the run.

The version tag (`bake/NAME:VERSION`) is applied only after verification passes, so it
never points at an unverified image; Packer's own tag is the bake key (`bake/NAME:key-…`),
removed again when verification fails. Packer's commit is rewritten into a reproducible
image (same inputs, same digest) before it is verified, so the image verified is the image
kept and published.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from bake.attest.filemanifest import manifest_predicate, volatile_set
from bake.errors import BakeError, ToolError
from bake.infra import packer
from bake.plan import Plan, upstream_pins
from bake.registry.backend import Registry
from bake.targets.base import (
    Artifact,
    BakeContext,
    BakeOptions,
    Base,
    Built,
    Evidence,
    PackerInputs,
    Stored,
    TimedEvents,
    Verification,
)
from bake.targets.docker import KIND, config, image_repository
from bake.targets.docker import engine as docker
from bake.targets.docker import normalize as reproducible
from bake.targets.docker.engine import Engine
from bake.targets.docker.evidence import collect_image_manifest, dpkg_status
from bake.targets.docker.rootfs import ensure_docker_rootfs
from bake.targets.docker.verify import verify_container_image
from bake.targets.runs import RUN_LABEL, DeadRun


@dataclass(frozen=True)
class DockerBase(Base):
    image: str = ""  # the image ID to build on


@dataclass(frozen=True)
class DockerBuilt(Built):
    key_tag: str = ""  # Packer's tag, removed if the image is not kept
    own_entrypoint: bool = False  # run the image as a deployer would, or keep it alive


def _mine(built: Built) -> DockerBuilt:
    if not isinstance(built, DockerBuilt):
        raise TypeError(f"not a docker bake: {built!r}")
    return built


class DockerSession:
    def __init__(self, ctx: BakeContext, engine: Engine) -> None:
        self.ctx = ctx
        # every container this session starts says which run made it (bake.targets.runs)
        self.engine = replace(engine, labels=((RUN_LABEL, ctx.run.id),)) if ctx.run else engine

    # --- before Packer ------------------------------------------------------------------

    def present(self, artifact: Artifact) -> bool:
        return bool(artifact.id) and docker.image_id(self.ctx.runner, self.engine, artifact.id) is not None

    def base(self, plan: Plan, parent: Artifact | None, opts: BakeOptions) -> Base:
        """The image to build on: the parent's, a bootstrapped rootfs, or a pinned image."""
        if plan.parent is not None and parent is not None:
            record = {
                "name": plan.parent.name,
                "version": plan.parent.version,
                "bake_key": plan.parent.key,
                "image_id": parent.id,
            }
            return DockerBase(record=record, image=parent.id)
        base = plan.resolved.recipe.base
        if base is None or (base.bootstrap is None and base.image is None):
            raise BakeError(f"{plan.name}: no base to build on", "give `base:` or `extends:`")
        if base.bootstrap is None:
            assert base.image is not None
            return DockerBase(record={"name": base.image, "image_id": base.image}, image=base.image)
        self.ctx.reporter.phase(f"{plan.name}: bootstrap", f"debian {base.bootstrap.suite} with mmdebstrap")
        t0 = time.monotonic()
        image, ref, built = ensure_docker_rootfs(
            self.ctx.runner,
            self.engine,
            plan.name,
            base.bootstrap,
            self.ctx.state / "bootstrap",
            rebuild=opts.cold,
            pins=upstream_pins(plan),
        )
        self.ctx.reporter.note(f"base {ref} {'built' if built else 'reused'} ({image[:19]})")
        return DockerBase(
            record={"name": ref, "image_id": image},
            timings={"bootstrap": time.monotonic() - t0},
            image=image,
        )

    @contextmanager
    def packer_inputs(self, plan: Plan, base: Base, work: Path) -> Iterator[PackerInputs]:
        assert isinstance(base, DockerBase)
        yield PackerInputs(variables={"base_image": base.image}, env=self.engine.env)

    # --- after Packer -------------------------------------------------------------------

    def built(self, plan: Plan, events: TimedEvents, work: Path, opts: BakeOptions) -> Built:
        found = packer.artifacts(e for _, e in events)
        image_id = next((a.id for a in found if a.builder_id.endswith("docker-import")), "")
        if not image_id.startswith("sha256:"):
            raise ToolError(f"packer finished but reported no image for {plan.name}")
        key_tag = f"{image_repository(plan.name)}:key-{plan.short_key}"
        digest: str | None = None
        timings: dict[str, float] = {}
        if opts.normalize:
            t0 = time.monotonic()
            image_id, digest = self._normalize(plan, image_id, work)
            timings["normalize"] = time.monotonic() - t0
        return DockerBuilt(
            artifact=self._artifact(plan, image_id, digest, tags=()),
            timings=timings,
            key_tag=key_tag,
            own_entrypoint=bool(config(plan).entrypoint),
        )

    def _normalize(self, plan: Plan, raw_image: str, work: Path) -> tuple[str, str]:
        """Replace Packer's commit with a deterministic image: same inputs, same digest."""
        self.ctx.reporter.phase("normalize", "sorted entries, clamped times, volatile files dropped")
        out = reproducible.normalize(
            self.ctx.runner,
            self.engine,
            raw_image,
            epoch=reproducible.epoch_from_key(plan.key),
            # the recipe's `volatile:` paths may change at run time (drift ignores them); they
            # are part of the image all the same, so they are not dropped here
            repository=image_repository(plan.name),
            tag=f"key-{plan.short_key}",
            work=work / "reproducible",
        )
        if out.image_id != raw_image:
            self.ctx.runner(self.engine.call("rmi", "--no-prune", "--", raw_image, check=False))
        return out.image_id, out.manifest_digest

    def _artifact(self, plan: Plan, image_id: str, digest: str | None, tags: Sequence[str]) -> Artifact:
        return Artifact(
            kind=KIND,
            id=image_id,
            digest=digest,
            meta={
                "repository": image_repository(plan.name),
                "tags": tuple(tags),
                "volatile": tuple(plan.resolved.recipe.volatile),
            },
        )

    def adopt(self, plan: Plan, ref: str) -> Built:
        info = docker.inspect_image(self.ctx.runner, self.engine, ref)
        if info is None:
            raise BakeError(
                f"no image {ref} in the Docker engine at {self.engine.host}", "pull or load it first"
            )
        # run the image as a deployer would when it has an entrypoint; otherwise keep it alive
        own = bool((info.get("Config") or {}).get("Entrypoint"))
        return DockerBuilt(artifact=Artifact(KIND, id=ref), own_entrypoint=own)

    def verify(self, plan: Plan, built: Built) -> Verification:
        mine = _mine(built)
        self.ctx.reporter.phase("verify", f"{len(plan.resolved.verify)} checks in a fresh container")
        report = verify_container_image(
            self.ctx.runner,
            self.engine,
            mine.artifact.id,
            plan.name,
            plan.resolved.verify,
            self.ctx.state / "work" / f"{plan.name}-{plan.target}-{plan.short_key}" / "verify",
            own_entrypoint=mine.own_entrypoint,
        )
        return Verification(report, {"verify": report.seconds})

    def keep(self, plan: Plan, built: Built, verification: Verification | None) -> Artifact:
        mine = _mine(built)
        version_tag = f"{image_repository(plan.name)}:{plan.version}"
        docker.tag(self.ctx.runner, self.engine, mine.artifact.id, version_tag)
        tags = (plan.version, f"key-{plan.short_key}")
        return self._artifact(plan, mine.artifact.id, mine.artifact.digest, tags)

    def discard(self, plan: Plan, built: Built) -> None:
        # the key tag must not make a later bake of the same key look reusable
        self.ctx.runner(self.engine.call("rmi", "--no-prune", "--", _mine(built).key_tag, check=False))

    # --- publishing ---------------------------------------------------------------------

    def evidence(self, artifact: Artifact) -> Evidence:
        runner, eng = self.ctx.runner, self.engine
        volatile = list(artifact.meta.get("volatile") or ())
        entries = collect_image_manifest(runner, eng, artifact.id, volatile)
        files = manifest_predicate(entries, sorted(volatile_set(volatile)))
        return Evidence(packages=dpkg_status(runner, eng, artifact.id), files=files)

    def copy_to(self, artifact: Artifact, registry: Registry, name: str, tag: str) -> Stored:
        pushed = registry.store_image(self.ctx.runner, self.engine.host, artifact.id, name, tag)
        return Stored(
            digest=pushed.digest,
            subjects=((pushed.ref.split("@", 1)[0], pushed.digest),),
            ref=pushed.ref,
            image_id=artifact.id,
        )

    # --- a dead run's leftovers ------------------------------------------------------------

    def sweep(self, run: DeadRun) -> list[str]:
        """What a killed run made in the engine: its containers (Packer's build container
        included) and the key tags of its docker bakes that were not recorded good."""
        from bake.record import find_good

        runner, done = self.ctx.runner, []
        for cid in docker.containers_of_run(runner, self.engine, f"{RUN_LABEL}={run.id}", run.packer_tmp):
            docker.remove_container(runner, self.engine, cid)
            done.append(f"container {cid[:12]}")
        for bake in run.bakes:
            if bake.target != "docker" or bake.work in run.live_work:
                continue
            if find_good(run.state, bake.name, bake.target, bake.key) is not None:
                continue  # a good bake keeps its key tag
            tag = f"{image_repository(bake.name)}:key-{bake.short_key}"
            if runner(self.engine.call("rmi", "--no-prune", "--", tag, check=False)).returncode == 0:
                done.append(f"image tag {tag}")
        return done

    # --- reproducibility ----------------------------------------------------------------

    def differences(self, plan: Plan, first: Path, second: Path) -> list[str]:
        layout = Path("work") / f"{plan.name}-{plan.target}-{plan.short_key}" / "reproducible" / "oci"
        return reproducible.diff_layers(first / layout, second / layout)

    def restore(self, plan: Plan, artifact: Artifact) -> None:
        docker.tag(self.ctx.runner, self.engine, artifact.id, f"{image_repository(plan.name)}:{plan.version}")
