"""The docker target: container images, baked by Packer's docker builder in a Docker engine.

Plan time (here, pure): the `targets.docker` config, the image's ENTRYPOINT/CMD/ENV/…
as `docker commit --change` lines, labels, and the parent to build on. Bake time
(:mod:`bake.targets.docker.session`): an engine (found, or a private dockerd), a base from
mmdebstrap, Packer's commit rewritten into a reproducible image, verification in a fresh
container, and copies to a registry by digest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bake.errors import BakeError
from bake.model import Model
from bake.targets.base import Artifact, BakeContext, Plugin, TargetSession
from bake.targets.docker.config import DockerConfig

if TYPE_CHECKING:
    from bake.plan import Plan

KIND = "docker-image"


def image_repository(name: str) -> str:
    return f"bake/{name}"


def config(plan: Plan) -> DockerConfig:
    conf = plan.resolved.recipe.targets.get("docker")
    return conf if isinstance(conf, DockerConfig) else DockerConfig()


def base_reference(plan: Plan) -> str:
    """Default for the `base_image` variable; bakes pass the exact image ID instead."""
    r = plan.resolved.recipe
    if plan.parent is not None:
        return f"{image_repository(plan.parent.name)}:key-{plan.parent.short_key}"
    if r.base and r.base.image:
        return r.base.image
    return f"{image_repository(plan.name)}-rootfs:latest"


def labels(plan: Plan, shared: Mapping[str, str]) -> dict[str, str]:
    return {**shared, **config(plan).labels}


def changes(plan: Plan, image_labels: Mapping[str, str]) -> list[str]:
    """`docker commit --change` lines: how the image runs, and its labels."""
    conf = config(plan)
    # Always set both: the build container ran /bin/sh, which `docker commit` would keep.
    # The resolved config already carries what a parent recipe declared.
    out = [
        "ENTRYPOINT " + json.dumps(list(conf.entrypoint or ())),
        "CMD " + json.dumps(list(conf.cmd or ())),
    ]
    out += [f"ENV {k}={json.dumps(v)}" for k, v in sorted(conf.env.items())]
    out += [f"EXPOSE {p}/tcp" for p in conf.expose]
    if conf.user:
        out.append(f"USER {conf.user}")
    if conf.workdir:
        out.append(f"WORKDIR {conf.workdir}")
    out += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in sorted(image_labels.items())]
    return out


class Docker:
    name: ClassVar[str] = "docker"
    config: ClassVar[type[Model]] = DockerConfig
    template: ClassVar[str] = "docker.pkr.hcl.j2"
    plugin: ClassVar[Plugin] = Plugin("docker", "github.com/hashicorp/docker")
    bakes: ClassVar[bool] = True

    def template_context(self, plan: Plan) -> Mapping[str, object]:
        from bake.compile.template import labels as shared_labels

        image_labels = labels(plan, shared_labels(plan))
        return {
            "labels": image_labels,
            "changes": changes(plan, image_labels),
            "repository": image_repository(plan.name),
            "base_image": base_reference(plan),
        }

    def check(self, plan: Plan) -> None:
        return None

    @contextmanager
    def session(self, ctx: BakeContext) -> Iterator[TargetSession]:
        from bake.targets.docker.engine import engine
        from bake.targets.docker.session import DockerSession

        with engine(ctx.runner, ctx.state, ctx.environ) as eng:
            yield DockerSession(ctx, eng)

    def artifact_to_json(self, artifact: Artifact) -> dict[str, Any]:
        meta = artifact.meta
        return {
            "type": artifact.kind,
            "image_id": artifact.id,
            "repository": meta.get("repository"),
            "tags": list(meta.get("tags") or ()),
            "volatile": list(meta.get("volatile") or ()),
            "reproducible_digest": artifact.digest,
            **({"layout": meta["layout"]} if meta.get("layout") else {}),
        }

    def artifact_from_json(self, doc: Mapping[str, Any]) -> Artifact:
        return Artifact(
            kind=str(doc.get("type") or KIND),
            id=str(doc.get("image_id") or ""),
            digest=doc.get("reproducible_digest"),
            meta={
                "repository": doc.get("repository"),
                "tags": tuple(doc.get("tags") or ()),
                "volatile": tuple(doc.get("volatile") or ()),
                **({"layout": str(doc["layout"])} if doc.get("layout") else {}),
            },
        )

    def describe(self, artifact: Artifact) -> list[tuple[str, str]]:
        rows = [("image", artifact.id)]
        tags = artifact.meta.get("tags") or ()
        if tags:
            rows.append(("tags", f"{artifact.meta.get('repository')}:{tags[0]}"))
        if artifact.digest:
            rows.append(("digest", f"{artifact.digest} (reproducible)"))
        return rows

    def file_names(self, out: Path) -> dict[str, Path]:
        raise BakeError(
            "a container image is not fetched as files",
            "pull it by its reference: `bake resolve` prints it",
        )

    def usage(self, files: Mapping[str, Path]) -> str | None:
        return None
