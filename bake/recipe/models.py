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
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from bake.model import Model
from bake.recipe.fields import (
    DIGEST_REF_RE,
    MODE_RE,
    NAME_RE,
    SEMVER_RE,
    VAR_NAME_RE,
    AbsPath,
    Mode,
    Name,
    NonEmpty,
    Strings,
    VarName,
)
from bake.recipe.modules import (
    MODULES,
    AnsibleModule,
    AptRepositoryModule,
    BlockInFileModule,
    CopyModule,
    CronModule,
    FileModule,
    GetUrlModule,
    GroupModule,
    LineInFileModule,
    ServiceModule,
    SysctlModule,
    UnarchiveModule,
    UserModule,
)

# what reaches mmdebstrap on the host: a suite name, a mirror URL, package names (never an
# option, never a second argument: see bake.targets.bootstrap.check_inputs)
SUITE_RE = r"^[a-z0-9][a-z0-9.+_-]{0,63}$"
MIRROR_RE = r"^(?:https?|file)://[^\s,\x27\x22\\]+$"  # no space, comma or quote
PACKAGE_RE = r"^[a-z0-9][a-z0-9+.-]*(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:_-]+)?$"

__all__ = [
    "DIGEST_REF_RE",
    "MODE_RE",
    "NAME_RE",
    "SEMVER_RE",
    "VAR_NAME_RE",
    "AbsPath",
    "Mode",
    "Name",
    "NonEmpty",
    "VarName",
]


# --- base -------------------------------------------------------------------------------


class Bootstrap(Model):
    """A root filesystem built from a Debian mirror with mmdebstrap (no image hub)."""

    distro: Literal["debian"] = "debian"
    suite: Annotated[str, StringConstraints(pattern=SUITE_RE)] = "bookworm"
    mirror: Annotated[str, StringConstraints(pattern=MIRROR_RE)] | None = Field(
        default=None,
        description="Mirror URL (http, https or file); default: the Debian mirror in the host's apt sources",
    )
    variant: Literal["minbase", "buildd", "required", "important", "standard"] = "minbase"
    include: tuple[Annotated[str, StringConstraints(pattern=PACKAGE_RE)], ...] = ()


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


# --- targets ---------------------------------------------------------------------------


def _validate_targets(value: Any) -> dict[str, Model]:
    """`targets:` — each key names a target plug-in (bake.targets.TARGETS), each value is
    validated by that target's own config model. Errors keep their path
    (``targets.qemu.disk_size``), so they read like any other field's."""
    from bake import targets  # the plug-in table; loaded when a recipe is validated

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("`targets` is a mapping of target names to their settings")
    out: dict[str, Model] = {}
    errors: list[InitErrorDetails] = []
    for name, conf in value.items():
        config = targets.config_of(str(name))
        if config is None:
            errors.append(InitErrorDetails(type="extra_forbidden", loc=(str(name),), input=conf))
            continue
        try:
            out[str(name)] = config.model_validate(conf if conf is not None else {})
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                ctx = err.get("ctx")
                errors.append(
                    InitErrorDetails(
                        type=err["type"],
                        loc=(str(name), *err["loc"]),
                        input=err["input"],
                        **({"ctx": ctx} if ctx else {}),  # type: ignore[typeddict-item]  # as pydantic gave it
                    )
                )
    if errors:
        raise ValidationError.from_exception_data("targets", errors)
    return out


TargetConfigs = Annotated[
    dict[str, Model],
    BeforeValidator(_validate_targets),
    WithJsonSchema({"type": "object"}),  # put together from the plug-ins by bake.recipe.schema
]


# --- steps ------------------------------------------------------------------------------


class Step(Model):
    """One module call. Exactly one module key; ``name``, ``when``, ``env``, ``loop`` and
    ``notify`` are optional."""

    name: str | None = None
    when: str | None = Field(default=None, description="Jinja2 expression, e.g. \"{{ target != 'docker' }}\"")
    env: dict[VarName, str] = Field(default_factory=dict)
    loop: list[Any] | str | None = Field(
        default=None,
        description="Run the step once per item of a list (or a Jinja2 expression giving one), "
        "with the item as {{ item }}",
    )
    notify: Strings = Field(
        default=(), description="Handlers to run, once, after all steps, when this step changed something"
    )
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
    lineinfile: LineInFileModule | None = None
    blockinfile: BlockInFileModule | None = None
    get_url: GetUrlModule | None = None
    unarchive: UnarchiveModule | None = None
    apt_repository: AptRepositoryModule | None = None
    sysctl: SysctlModule | None = None
    cron: CronModule | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_module(cls, data: Any) -> Any:
        if isinstance(data, dict):
            present = [m for m in MODULES if m in data]
            if len(present) != 1:
                raise ValueError(_one_of_message("step", "module", MODULES, present, data))
            if data[present[0]] is None:
                raise ValueError(f"`{present[0]}` needs a value")
        return data

    @model_validator(mode="after")
    def _ansible_alone(self) -> Step:
        if self.ansible is not None and self.notify:
            raise ValueError("an `ansible` step cannot notify bake handlers; use the play's own handlers")
        if self.ansible is not None and self.env:
            raise ValueError(
                "an `ansible` step takes no `env`: the play gets the recipe's vars and secrets as extra vars"
            )
        return self

    @property
    def module(self) -> str:
        for m in MODULES:
            if getattr(self, "copy_" if m == "copy" else m) is not None:
                return m
        raise AssertionError("validated step without module")  # pragma: no cover

    def spec(self) -> Any:
        """The module's own settings (a model, a list or a string)."""
        return getattr(self, "copy_" if self.module == "copy" else self.module)


class Handler(Step):
    """A step that runs once, after all steps, when a step that `notify`s it changed
    something; handlers run in the order they are listed."""

    name: NonEmpty  # required here: steps notify it by name

    @model_validator(mode="after")
    def _runs_once(self) -> Handler:
        if self.loop is not None:
            raise ValueError("a handler runs once: `loop` is for steps")
        if self.notify:
            raise ValueError("a handler cannot `notify` other handlers")
        return self


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
    when: str | None = Field(
        default=None, description="Jinja2 expression; the check is skipped (and reported so) when false"
    )
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
            if data[present[0]] is None:
                raise ValueError(f"`{present[0]}` needs a value")
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
    targets: TargetConfigs = Field(default_factory=dict)
    steps: tuple[Step, ...] = ()
    handlers: tuple[Handler, ...] = Field(
        default=(), description="Steps run once, in this order, after all steps, when notified"
    )
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

    @field_validator("handlers")
    @classmethod
    def _unique_handlers(cls, handlers: tuple[Handler, ...]) -> tuple[Handler, ...]:
        names = [h.name for h in handlers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"handler named twice: {', '.join(dupes)}")
        return handlers


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
