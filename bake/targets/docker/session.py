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

from bake.attest.digest import is_digest, sha256_bytes
from bake.attest.filemanifest import manifest_predicate, volatile_set
from bake.attest.predicates import recipe_uri
from bake.errors import BakeError, ToolError, TrustError
from bake.infra import packer
from bake.plan import Plan, upstream_pins
from bake.registry import images
from bake.registry.backend import Registry
from bake.registry.images import layout_tag
from bake.targets.base import (
    Artifact,
    BakeContext,
    BakeOptions,
    Base,
    Built,
    Evidence,
    PackerInputs,
    Published,
    Stored,
    TimedEvents,
    Verification,
)
from bake.targets.docker import KIND, compare, config, image_repository
from bake.targets.docker import engine as docker
from bake.targets.docker import normalize as reproducible
from bake.targets.docker.engine import Engine
from bake.targets.docker.evidence import collect_image_manifest, dpkg_status, os_evidence
from bake.targets.docker.rootfs import ensure_docker_rootfs
from bake.targets.docker.verify import verify_container_image
from bake.targets.runs import RUN_LABEL, DeadRun


@dataclass(frozen=True)
class DockerBase(Base):
    image: str = ""  # the image ID to build on
    name: str | None = None  # what deployers call it (org.opencontainers.image.base.name)
    digest: str | None = None  # its manifest digest (base.digest), where it has one
    layout: str | None = None  # the OCI layout a parent bake wrote here, if this machine has it


@dataclass(frozen=True)
class DockerBuilt(Built):
    key_tag: str = ""  # Packer's tag, removed if the image is not kept
    own_entrypoint: bool = False  # run the image as a deployer would, or keep it alive


def layout_source(artifact: Artifact) -> str | None:
    """``oci:LAYOUT:TAG`` of the layout normalize wrote, when it still holds the artifact's
    manifest: copied from there, the image keeps its annotations (an engine drops them)
    and, into an OCI layout, its very digest. None: copy the engine's image instead."""
    layout = artifact.meta.get("layout")
    if not layout or not artifact.digest:
        return None
    path = Path(str(layout))
    try:
        index = (path / "index.json").read_bytes()
        tag = layout_tag(index, artifact.digest, path)
        manifest = (path / "blobs" / "sha256" / artifact.digest.removeprefix("sha256:")).read_bytes()
    except (OSError, BakeError):
        return None
    return f"oci:{path}:{tag}" if sha256_bytes(manifest) == artifact.digest else None


def _mine(built: Built) -> DockerBuilt:
    if not isinstance(built, DockerBuilt):
        raise TypeError(f"not a docker bake: {built!r}")
    return built


class DockerSession:
    def __init__(self, ctx: BakeContext, engine: Engine) -> None:
        self.ctx = ctx
        # every container this session starts says which run made it (bake.targets.runs)
        self.engine = replace(engine, labels=((RUN_LABEL, ctx.run.id),)) if ctx.run else engine
        self._bases: dict[str, DockerBase] = {}  # by bake key, for this run's bakes

    # --- before Packer ------------------------------------------------------------------

    def present(self, artifact: Artifact) -> bool:
        return bool(artifact.id) and docker.image_id(self.ctx.runner, self.engine, artifact.id) is not None

    def fetch(self, plan: Plan, published: Published) -> Artifact:
        """Pull a published image by digest into the engine (skopeo checks every blob
        against the digest), unless the engine holds that exact image already (its ID is
        the digest of a config that names every layer's content)."""
        if not published.ref or "@sha256:" not in published.ref:
            raise BakeError(f"{plan.name} {published.version} in {published.registry} has no image by digest")
        have = published.image_id and docker.image_id(self.ctx.runner, self.engine, published.image_id)
        if have:
            image = published.image_id or ""
        else:
            what = f"{published.version} by digest {published.digest[:19]}"
            self.ctx.reporter.phase(f"{plan.name}: pull", what)
            image = images.pull_to_docker(
                self.ctx.runner,
                self.engine.host,
                published.ref,
                name=f"{image_repository(plan.name)}:{plan.version}",
                environ=self.ctx.environ,
            )
        if published.image_id and image != published.image_id:
            raise TrustError(
                f"{plan.name} {published.version}: the image pulled by digest has the ID {image[:19]}, "
                f"its signed metadata says {published.image_id[:19]}",
                "the registry's image does not match its metadata; nothing was built on it",
            )
        docker.tag(self.ctx.runner, self.engine, image, f"{image_repository(plan.name)}:{plan.version}")
        artifact = self._artifact(plan, image, published.digest, tags=(plan.version,))
        return replace(artifact, meta={**artifact.meta, "published": published.version})

    def base(self, plan: Plan, parent: Artifact | None, opts: BakeOptions) -> Base:
        """The image to build on: the parent's, a bootstrapped rootfs, or a pinned image."""
        if plan.parent is not None and parent is not None:
            record = {
                "name": plan.parent.name,
                "version": plan.parent.version,
                "bake_key": plan.parent.key,
                "image_id": parent.id,
            }
            if parent.digest:
                record["digest"] = parent.digest
            if "published" in parent.meta:
                record["published"] = str(parent.meta["published"])
            name = f"{image_repository(plan.parent.name)}:{plan.parent.version}"
            layout = parent.meta.get("layout")
            return DockerBase(
                record=record,
                image=parent.id,
                name=name,
                digest=parent.digest,
                layout=str(layout) if isinstance(layout, str) else None,
            )
        base = plan.resolved.recipe.base
        if base is None or (base.bootstrap is None and base.image is None):
            raise BakeError(f"{plan.name}: no base to build on", "give `base:` or `extends:`")
        if base.bootstrap is None:
            assert base.image is not None
            ref, _, pinned = base.image.rpartition("@")
            return DockerBase(
                record={"name": base.image, "image_id": base.image},
                image=base.image,
                name=ref or None,
                digest=pinned if is_digest(pinned) else None,
            )
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
        self._bases[plan.key] = base  # its name and digest annotate the image
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
        layout = str(work / "reproducible" / "oci") if digest else None
        return DockerBuilt(
            artifact=self._artifact(plan, image_id, digest, tags=(), layout=layout),
            timings=timings,
            key_tag=key_tag,
            own_entrypoint=bool(config(plan).entrypoint),
        )

    def _normalize(self, plan: Plan, raw_image: str, work: Path) -> tuple[str, str]:
        """Replace Packer's commit with a deterministic image: same inputs, same digest."""
        self.ctx.reporter.phase("normalize", "sorted entries, clamped times, volatile files dropped")
        epoch = reproducible.epoch_from_key(plan.key)
        base = self._bases.get(plan.key)
        annotations = reproducible.image_annotations(
            epoch=epoch,
            version=plan.version,
            revision=plan.key,
            source=recipe_uri(plan.name, plan.version),
            base_name=base.name if base else None,
            base_digest=base.digest if base else None,
        )
        out = reproducible.normalize(
            self.ctx.runner,
            self.engine,
            raw_image,
            epoch=epoch,
            manifest_annotations=annotations,
            # the recipe's `volatile:` paths may change at run time (drift ignores them); they
            # are part of the image all the same, so they are not dropped here
            repository=image_repository(plan.name),
            tag=f"key-{plan.short_key}",
            work=work / "reproducible",
            # a child keeps its parent's layers and rewrites only its own
            parent=reproducible.Parent(base.image, Path(base.layout) if base.layout else None)
            if base and base.image
            else None,
        )
        if out.image_id != raw_image:
            self.ctx.runner(self.engine.call("rmi", "--no-prune", "--", raw_image, check=False))
        return out.image_id, out.manifest_digest

    def _artifact(
        self, plan: Plan, image_id: str, digest: str | None, tags: Sequence[str], layout: str | None = None
    ) -> Artifact:
        meta: dict[str, object] = {
            "repository": image_repository(plan.name),
            "tags": tuple(tags),
            "volatile": tuple(plan.resolved.recipe.volatile),
        }
        if layout:
            meta["layout"] = layout  # the OCI layout normalize wrote: the image with its annotations
        return Artifact(kind=KIND, id=image_id, digest=digest, meta=meta)

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
        layout = mine.artifact.meta.get("layout")
        return self._artifact(plan, mine.artifact.id, mine.artifact.digest, tags, layout)

    def discard(self, plan: Plan, built: Built) -> None:
        # the key tag must not make a later bake of the same key look reusable
        self.ctx.runner(self.engine.call("rmi", "--no-prune", "--", _mine(built).key_tag, check=False))

    # --- publishing ---------------------------------------------------------------------

    def evidence(self, artifact: Artifact) -> Evidence:
        runner, eng = self.ctx.runner, self.engine
        volatile = list(artifact.meta.get("volatile") or ())
        entries = collect_image_manifest(runner, eng, artifact.id, volatile)
        files = manifest_predicate(entries, sorted(volatile_set(volatile)))
        found = os_evidence(runner, eng, artifact.id)
        return Evidence(
            packages=dpkg_status(runner, eng, artifact.id),
            files=files,
            copyrights=found.copyrights,
            os_release=found.os_release,
        )

    def copy_to(self, artifact: Artifact, registry: Registry, name: str, tag: str) -> Stored:
        source = layout_source(artifact)
        pushed = registry.store_image(
            self.ctx.runner, self.engine.host, artifact.id, name, tag, source=source
        )
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
        return compare.diff_layers(first / layout, second / layout)

    def restore(self, plan: Plan, artifact: Artifact) -> None:
        docker.tag(self.ctx.runner, self.engine, artifact.id, f"{image_repository(plan.name)}:{plan.version}")
