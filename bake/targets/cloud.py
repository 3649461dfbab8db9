"""Cloud targets: amazon-ebs (AMIs) and googlecompute (GCE images). Render and validate only.

Their templates are complete and pass `packer validate`; a bake needs a cloud account and
network access to the cloud, which bake's own machines do not have, so `bake build`
refuses them with that reason and what to run instead. Cloud images log in as an
unprivileged user: steps run as root through sudo.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field, StringConstraints

from bake.errors import BakeError
from bake.model import Model
from bake.recipe.models import NonEmpty
from bake.targets import bakeable
from bake.targets.base import Artifact, BakeContext, Plugin, TargetSession

if TYPE_CHECKING:
    from bake.plan import Plan

SUDO_EXECUTE = "chmod +x {{ .Path }}; sudo -E env {{ .Vars }} {{ .Path }}"


class AmazonEbsConfig(Model):
    region: NonEmpty = "us-east-1"
    instance_type: NonEmpty = "t3.micro"
    source_ami: Annotated[str, StringConstraints(pattern=r"^ami-[0-9a-f]+$")] | None = None
    source_ami_owner: NonEmpty = "136693071363"
    source_ami_name: NonEmpty = "debian-12-amd64-*"
    ssh_username: NonEmpty = "admin"
    ami_regions: tuple[NonEmpty, ...] = ()
    volume_size: Annotated[int, Field(ge=1)] = 8


class GoogleComputeConfig(Model):
    project_id: NonEmpty
    zone: NonEmpty = "europe-west1-b"
    source_image_family: NonEmpty = "debian-12"
    machine_type: NonEmpty = "e2-small"
    ssh_username: NonEmpty = "packer"
    disk_size: Annotated[int, Field(ge=10)] = 10


class _Cloud:
    """What both cloud targets share: rendering, and a clear refusal to bake."""

    name: ClassVar[str]
    bakes: ClassVar[bool] = False

    def template_context(self, plan: Plan) -> Mapping[str, object]:
        return {"execute_command": SUDO_EXECUTE}

    def refusal(self) -> BakeError:
        return BakeError(
            f"`bake build -t {self.name}` needs a cloud account and network access to the cloud; "
            "bake renders and validates cloud templates but does not run them",
            f"`bake render RECIPE -t {self.name} -o DIR`, then `packer build DIR` where the credentials "
            f"are; bake builds: {', '.join(bakeable())}",
        )

    def check(self, plan: Plan) -> None:
        raise self.refusal()

    @contextmanager
    def session(self, ctx: BakeContext) -> Iterator[TargetSession]:
        raise self.refusal()
        yield  # pragma: no cover - never reached

    def artifact_to_json(self, artifact: Artifact) -> dict[str, Any]:
        return {"type": artifact.kind, "id": artifact.id}

    def artifact_from_json(self, doc: Mapping[str, Any]) -> Artifact:
        return Artifact(kind=str(doc.get("type") or self.name), id=str(doc.get("id") or ""))

    def describe(self, artifact: Artifact) -> list[tuple[str, str]]:
        return [("image", artifact.id)]

    def file_names(self, out: Path) -> dict[str, Path]:
        raise BakeError(f"a {self.name} image is not fetched as files", "it lives in the cloud account")

    def usage(self, files: Mapping[str, Path]) -> str | None:
        return None


class AmazonEbs(_Cloud):
    name: ClassVar[str] = "amazon-ebs"
    config: ClassVar[type[Model]] = AmazonEbsConfig
    template: ClassVar[str] = "amazon-ebs.pkr.hcl.j2"
    plugin: ClassVar[Plugin] = Plugin("amazon", "github.com/hashicorp/amazon")


class GoogleCompute(_Cloud):
    name: ClassVar[str] = "googlecompute"
    config: ClassVar[type[Model]] = GoogleComputeConfig
    template: ClassVar[str] = "googlecompute.pkr.hcl.j2"
    plugin: ClassVar[Plugin] = Plugin("googlecompute", "github.com/hashicorp/googlecompute")
