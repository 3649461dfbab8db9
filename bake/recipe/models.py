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


class FileModule(Model):
    """A file with inline content, or (``state``) a directory, a symlink, or nothing."""

    dest: AbsPath
    state: Literal["file", "directory", "link", "absent"] = "file"
    content: str | None = Field(default=None, description="The file's content (state: file)")
    src: AbsPath | None = Field(default=None, description="Where the link points (state: link)")
    mode: Mode | None = Field(default=None, description='Default "0644" for files, "0755" for directories')
    owner: NonEmpty = "root"
    group: NonEmpty | None = None

    @model_validator(mode="after")
    def _fields_of_state(self) -> FileModule:
        if self.state == "file" and self.content is None:
            raise ValueError("`content` is required for a file (or give state: directory|link|absent)")
        if self.state != "file" and self.content is not None:
            raise ValueError(f"`content` is only for state: file, not state: {self.state}")
        if (self.state == "link") != (self.src is not None):
            raise ValueError("state: link needs `src` (where the link points); other states take none")
        if self.state in ("link", "absent") and self.mode is not None:
            raise ValueError(f"`mode` does not apply to state: {self.state}")
        return self


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


def _as_tuple(value: Any) -> Any:
    """A single string where a list is expected (`tags: web`, `notify: restart`)."""
    return (value,) if isinstance(value, str) else value


Strings = Annotated[tuple[NonEmpty, ...], BeforeValidator(_as_tuple)]


class AnsibleModule(Model):
    """A playbook run by ansible-core from bake's own environment against the build
    instance. The playbook's folder and every `roles_path` folder are part of the bake key."""

    playbook: NonEmpty = Field(description="Relative to the recipe's folder, in a folder of its own")
    roles_path: Strings = Field(default=(), description="Folders with roles, relative to the recipe's folder")
    extra_vars: dict[VarName, Any] = Field(
        default_factory=dict, description="Extra vars, over the recipe's vars (all reach the play)"
    )
    groups: tuple[Name, ...] = Field(default=(), description="Inventory groups the build host is in")
    tags: Strings = ()
    skip_tags: Strings = ()
    check: bool = Field(default=False, description="Run the play in check mode (no changes)")


EDIT_MARK = "{mark}"


class LineInFileModule(Model):
    """Ensure a line is in a file (or, `state: absent`, that no line matches)."""

    path: AbsPath
    line: str | None = None
    regexp: str | None = Field(
        default=None, description="POSIX extended regular expression (awk); the last match is replaced"
    )
    state: Literal["present", "absent"] = "present"
    insertafter: str | None = Field(default=None, description="EOF (default) or a regular expression")
    insertbefore: str | None = Field(default=None, description="BOF or a regular expression")
    create: bool = False
    mode: Mode | None = None
    owner: NonEmpty | None = None
    group: NonEmpty | None = None

    @model_validator(mode="after")
    def _what_to_do(self) -> LineInFileModule:
        if self.state == "present" and self.line is None:
            raise ValueError("`line` is required for state: present")
        if "\n" in (self.line or "") or "\n" in (self.regexp or ""):
            raise ValueError("`line` and `regexp` are one line each; use blockinfile for several")
        if self.state == "absent" and self.line is None and self.regexp is None:
            raise ValueError("state: absent needs `regexp` or `line`")
        if self.insertafter is not None and self.insertbefore is not None:
            raise ValueError("give at most one of `insertafter` and `insertbefore`")
        return self


class BlockInFileModule(Model):
    """A block of lines between two marker lines, replaced as a whole."""

    path: AbsPath
    block: str = ""
    marker: str = Field(default="# {mark} MANAGED BY BAKE", description="{mark} becomes BEGIN and END")
    state: Literal["present", "absent"] = "present"
    insertafter: str | None = Field(default=None, description="EOF (default) or a regular expression")
    insertbefore: str | None = Field(default=None, description="BOF or a regular expression")
    create: bool = False
    mode: Mode | None = None
    owner: NonEmpty | None = None
    group: NonEmpty | None = None

    @model_validator(mode="after")
    def _marker(self) -> BlockInFileModule:
        if EDIT_MARK not in self.marker or "\n" in self.marker:
            raise ValueError('`marker` is one line with {mark} in it, e.g. "# {mark} MANAGED BY BAKE"')
        if self.insertafter is not None and self.insertbefore is not None:
            raise ValueError("give at most one of `insertafter` and `insertbefore`")
        return self


Sha256 = Annotated[str, StringConstraints(pattern=r"^(sha256:)?[0-9a-f]{64}$")]


class GetUrlModule(Model):
    """Download a file in the build instance, verified against its sha256 before use."""

    url: Annotated[str, StringConstraints(pattern=r"^(https?|ftp)://\S+$")]
    dest: AbsPath
    sha256: Sha256 = Field(description="The file's sha256 (64 hex digits); part of the bake key")
    mode: Mode = "0644"
    owner: NonEmpty = "root"
    group: NonEmpty | None = None

    @property
    def digest(self) -> str:
        return self.sha256.removeprefix("sha256:")


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tar.zst")


class UnarchiveModule(Model):
    """Unpack a tar archive (from the recipe's folder, or `remote_src` in the image)."""

    src: NonEmpty
    dest: AbsPath = Field(description="An existing folder")
    remote_src: bool = Field(default=False, description="src is a path in the image, e.g. from get_url")
    creates: AbsPath | None = Field(default=None, description="Skip when this path exists")
    owner: NonEmpty | None = None
    group: NonEmpty | None = None

    @model_validator(mode="after")
    def _tar(self) -> UnarchiveModule:
        if not self.src.endswith(ARCHIVE_SUFFIXES):
            raise ValueError(f"`src` must be a tar archive ({', '.join(ARCHIVE_SUFFIXES)})")
        if self.remote_src and not self.src.startswith("/"):
            raise ValueError("with remote_src, `src` is an absolute path in the image")
        return self


class AptRepositoryModule(Model):
    """An apt source in deb822 format, signed by a key file from the recipe's folder."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    uris: Annotated[
        tuple[Annotated[str, StringConstraints(pattern=r"^[a-z0-9+]+://\S+$")], ...], Field(min_length=1)
    ]
    suites: Annotated[tuple[NonEmpty, ...], Field(min_length=1)]
    components: tuple[NonEmpty, ...] = ()
    key: NonEmpty | None = Field(default=None, description="OpenPGP key file in the recipe's folder")
    types: tuple[Literal["deb", "deb-src"], ...] = ("deb",)
    architectures: tuple[NonEmpty, ...] = ()
    state: Literal["present", "absent"] = "present"

    @model_validator(mode="after")
    def _signed(self) -> AptRepositoryModule:
        if self.state == "present" and self.key is None:
            raise ValueError(
                "`key` is required: a repository is signed by a key file from the recipe's folder"
            )
        return self


class SysctlModule(Model):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_][a-z0-9_.\-/]*$")]
    value: Annotated[str, StringConstraints(pattern=r"^[^\n]*$"), BeforeValidator(str)]
    file: AbsPath = "/etc/sysctl.d/99-bake.conf"
    state: Literal["present", "absent"] = "present"
    reload: bool = Field(default=False, description="Apply now (sysctl -p); off: applied at boot")


CronField = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z*/,-]+$"), BeforeValidator(str)]


class CronModule(Model):
    """A cron entry in a file under /etc/cron.d (one file per entry by default)."""

    name: NonEmpty
    job: str | None = None
    minute: CronField = "*"
    hour: CronField = "*"
    day: CronField = "*"
    month: CronField = "*"
    weekday: CronField = "*"
    special_time: Literal["reboot", "yearly", "annually", "monthly", "weekly", "daily", "hourly"] | None = (
        None
    )
    user: Name = "root"
    cron_file: Annotated[str, StringConstraints(pattern=r"^(/etc/cron\.d/)?[A-Za-z0-9_-]+$")] | None = Field(
        default=None, description="A file name under /etc/cron.d; default: bake-NAME"
    )
    state: Literal["present", "absent"] = "present"

    @model_validator(mode="after")
    def _job(self) -> CronModule:
        if self.state == "present" and not self.job:
            raise ValueError("`job` (the command) is required for state: present")
        if "\n" in (self.job or "") or "\n" in self.name:
            raise ValueError("`name` and `job` are one line each")
        return self


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
    "lineinfile",
    "blockinfile",
    "get_url",
    "unarchive",
    "apt_repository",
    "sysctl",
    "cron",
)


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
