"""The recipe language as frozen, typed models.

pydantic v2 rather than dataclasses: it gives us, from one definition, strict validation
with the exact location of every error (which we map back to YAML line and column), a
JSON Schema for editors (`bake schema`), and frozen models. Unknown keys are errors
(``extra="forbid"``), so a misspelt key never silently does nothing.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

NAME_RE = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SEMVER_RE = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
MODE_RE = r"^0?[0-7]{3,4}$"
DIGEST_REF_RE = r"^[^@\s]+@sha256:[0-9a-f]{64}$"
VAR_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"

Name = Annotated[str, StringConstraints(pattern=NAME_RE)]
Mode = Annotated[str, StringConstraints(pattern=MODE_RE)]
AbsPath = Annotated[str, StringConstraints(pattern=r"^/")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
VarName = Annotated[str, StringConstraints(pattern=VAR_NAME_RE)]

TARGETS = ("docker", "qemu", "amazon-ebs", "googlecompute")
Target = Literal["docker", "qemu", "amazon-ebs", "googlecompute"]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --- base -------------------------------------------------------------------------------


class Bootstrap(Model):
    """A root filesystem built from a Debian mirror with mmdebstrap (no image hub)."""

    distro: Literal["debian"] = "debian"
    suite: NonEmpty = "bookworm"
    mirror: str | None = Field(
        default=None, description="Mirror URL; default: the Debian mirror in the host's apt sources"
    )
    variant: Literal["minbase", "buildd", "required", "important", "standard"] = "minbase"
    include: tuple[NonEmpty, ...] = ()


class Base(Model):
    bootstrap: Bootstrap | None = None
    image: Annotated[str, StringConstraints(pattern=DIGEST_REF_RE)] | None = Field(
        default=None, description="An image pinned by digest: REF@sha256:<64 hex>"
    )

    @model_validator(mode="after")
    def _one_of(self) -> Base:
        if (self.bootstrap is None) == (self.image is None):
            raise ValueError("give exactly one of `bootstrap` or `image`")
        return self


class Secret(Model):
    name: VarName
    env: Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]*$")]


# --- targets ----------------------------------------------------------------------------


class DockerTarget(Model):
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: dict[VarName, str] = Field(default_factory=dict)
    expose: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    user: str | None = None
    workdir: AbsPath | None = None


class QemuTarget(Model):
    disk_size: Annotated[str, StringConstraints(pattern=r"^\d+[MG]$")] = "4G"
    memory: Annotated[int, Field(ge=256)] = 1024
    cpus: Annotated[int, Field(ge=1)] = 1
    accelerator: Literal["auto", "kvm", "tcg"] = "auto"
    ssh_username: NonEmpty = "root"
    boot_wait: str = "5s"


class AmazonEbsTarget(Model):
    region: NonEmpty = "us-east-1"
    instance_type: NonEmpty = "t3.micro"
    source_ami: Annotated[str, StringConstraints(pattern=r"^ami-[0-9a-f]+$")] | None = None
    source_ami_owner: NonEmpty = "136693071363"
    source_ami_name: NonEmpty = "debian-12-amd64-*"
    ssh_username: NonEmpty = "admin"
    ami_regions: tuple[NonEmpty, ...] = ()
    volume_size: Annotated[int, Field(ge=1)] = 8


class GoogleComputeTarget(Model):
    project_id: NonEmpty
    zone: NonEmpty = "europe-west1-b"
    source_image_family: NonEmpty = "debian-12"
    machine_type: NonEmpty = "e2-small"
    ssh_username: NonEmpty = "packer"
    disk_size: Annotated[int, Field(ge=10)] = 10


class Targets(Model):
    docker: DockerTarget | None = None
    qemu: QemuTarget | None = None
    amazon_ebs: AmazonEbsTarget | None = Field(default=None, alias="amazon-ebs")
    googlecompute: GoogleComputeTarget | None = None

    def names(self) -> tuple[str, ...]:
        return tuple(t for t in TARGETS if self.get(t) is not None)

    def get(self, target: str) -> Model | None:
        value: Model | None = getattr(self, target.replace("-", "_"), None)
        return value


# --- steps ------------------------------------------------------------------------------


class FileModule(Model):
    dest: AbsPath
    content: str
    mode: Mode = "0644"
    owner: NonEmpty = "root"
    group: NonEmpty | None = None


class CopyModule(Model):
    src: NonEmpty
    dest: AbsPath
    mode: Mode = "0644"
    owner: NonEmpty = "root"
    group: NonEmpty | None = None


class UserModule(Model):
    name: Name
    uid: Annotated[int, Field(ge=0, le=65534)] | None = None
    groups: tuple[Name, ...] = ()
    shell: AbsPath | None = None
    home: AbsPath | None = None
    system: bool = False


class GroupModule(Model):
    name: Name
    gid: Annotated[int, Field(ge=0, le=65534)] | None = None
    system: bool = False


class ServiceModule(Model):
    name: NonEmpty
    enabled: bool = True


class AnsibleModule(Model):
    playbook: NonEmpty
    extra_vars: dict[str, str] = Field(default_factory=dict)


MODULES = (
    "packages",
    "file",
    "copy",
    "template",
    "user",
    "group",
    "service",
    "shell",
    "command",
    "ansible",
)


class Step(Model):
    """One module call. Exactly one module key; ``name``, ``when`` and ``env`` are optional."""

    name: str | None = None
    when: str | None = Field(default=None, description="Jinja2 expression, e.g. \"{{ target == 'qemu' }}\"")
    env: dict[VarName, str] = Field(default_factory=dict)
    packages: tuple[NonEmpty, ...] | None = None
    file: FileModule | None = None
    copy_: CopyModule | None = Field(default=None, alias="copy")
    template: CopyModule | None = None
    user: UserModule | None = None
    group: GroupModule | None = None
    service: ServiceModule | None = None
    shell: NonEmpty | None = None
    command: tuple[NonEmpty, ...] | None = None
    ansible: AnsibleModule | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_module(cls, data: Any) -> Any:
        if isinstance(data, dict):
            present = [m for m in MODULES if m in data]
            if len(present) != 1:
                raise ValueError(_one_of_message("step", "module", MODULES, present, data))
        return data

    @property
    def module(self) -> str:
        for m in MODULES:
            if getattr(self, "copy_" if m == "copy" else m) is not None:
                return m
        raise AssertionError("validated step without module")  # pragma: no cover


# --- verify -----------------------------------------------------------------------------


class PackageCheck(Model):
    name: NonEmpty
    installed: bool = True
    version: str | None = None


class FileCheck(Model):
    path: AbsPath
    exists: bool = True
    contains: str | None = None
    mode: Mode | None = None
    owner: str | None = None
    group: str | None = None
    type: Literal["file", "directory", "symlink"] | None = None


class UserCheck(Model):
    name: Name
    exists: bool = True
    uid: int | None = None
    groups: tuple[str, ...] = ()
    shell: str | None = None


class GroupCheck(Model):
    name: Name
    exists: bool = True
    gid: int | None = None


class CommandCheck(Model):
    run: NonEmpty
    rc: int = 0
    stdout: str | None = Field(default=None, description="substring the output must contain")


class ServiceCheck(Model):
    name: NonEmpty
    enabled: bool | None = True
    running: bool | None = None


class PortCheck(Model):
    port: Annotated[int, Field(ge=1, le=65535)]
    proto: Literal["tcp", "udp"] = "tcp"
    listening: bool = True


CHECKS = ("package", "file", "user", "group", "command", "service", "port", "testinfra")


class Check(Model):
    name: str | None = None
    package: PackageCheck | None = None
    file: FileCheck | None = None
    user: UserCheck | None = None
    group: GroupCheck | None = None
    command: CommandCheck | None = None
    service: ServiceCheck | None = None
    port: PortCheck | None = None
    testinfra: NonEmpty | None = Field(
        default=None, description="Python body of a testinfra test; `host` is in scope"
    )

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_check(cls, data: Any) -> Any:
        if isinstance(data, dict):
            present = [c for c in CHECKS if c in data]
            if len(present) != 1:
                raise ValueError(_one_of_message("check", "kind", CHECKS, present, data))
        return data

    @property
    def kind(self) -> str:
        for c in CHECKS:
            if getattr(self, c) is not None:
                return c
        raise AssertionError("validated check without kind")  # pragma: no cover


# --- the recipe -------------------------------------------------------------------------


class Recipe(Model):
    """A recipe as written (before vars are rendered)."""

    name: Name
    version: Annotated[str, StringConstraints(pattern=SEMVER_RE)]
    description: str = ""
    base: Base | None = None
    extends: Name | None = None
    vars: dict[VarName, Any] = Field(default_factory=dict)
    secrets: tuple[Secret, ...] = ()
    targets: Targets = Field(default_factory=Targets)
    steps: tuple[Step, ...] = ()
    verify: tuple[Check, ...] = ()
    volatile: tuple[AbsPath, ...] = Field(
        default=(),
        description="Extra paths whose content may change at run time (drift ignores them)",
    )

    @model_validator(mode="after")
    def _base_or_extends(self) -> Recipe:
        if (self.base is None) == (self.extends is None):
            raise ValueError("give exactly one of `base` (a base image) or `extends` (a parent recipe)")
        return self

    @field_validator("secrets")
    @classmethod
    def _unique_secrets(cls, secrets: tuple[Secret, ...]) -> tuple[Secret, ...]:
        names = [s.name for s in secrets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"secret declared twice: {', '.join(dupes)}")
        return secrets


def _one_of_message(
    what: str, kind: str, choices: tuple[str, ...], present: list[str], data: dict[str, Any]
) -> str:
    if present:
        return f"a {what} takes exactly one {kind}, found {len(present)}: {', '.join(present)}"
    for key in data:
        near = difflib.get_close_matches(str(key), choices, n=1, cutoff=0.6)
        if near:
            return f"unknown {kind} `{key}`: did you mean `{near[0]}`?"
    return f"a {what} needs one {kind} of: {', '.join(choices)}"


def is_semver(text: str) -> bool:
    return re.match(SEMVER_RE, text) is not None
