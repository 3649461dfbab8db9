"""The step modules' settings: one frozen model per module (`file:`, `lineinfile:` …).

Each validates what it can before anything runs (an absolute `dest`, a sha256 for every
download, a key for every apt repository) and says what to write instead.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints, model_validator

from bake.model import Model
from bake.recipe.fields import AbsPath, Mode, Name, NonEmpty, Strings, VarName


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


class FileEdit(Model):
    """What lineinfile and blockinfile share: the file, where new text goes, how it is made."""

    path: AbsPath
    state: Literal["present", "absent"] = "present"
    insertafter: str | None = Field(default=None, description="EOF (default) or a regular expression")
    insertbefore: str | None = Field(default=None, description="BOF or a regular expression")
    create: bool = False
    mode: Mode | None = None
    owner: NonEmpty | None = None
    group: NonEmpty | None = None

    @model_validator(mode="after")
    def _one_place(self) -> FileEdit:
        if self.insertafter is not None and self.insertbefore is not None:
            raise ValueError("give at most one of `insertafter` and `insertbefore`")
        return self


class LineInFileModule(FileEdit):
    """Ensure a line is in a file (or, `state: absent`, that no line matches)."""

    line: str | None = None
    regexp: str | None = Field(
        default=None, description="POSIX extended regular expression (awk); the last match is replaced"
    )

    @model_validator(mode="after")
    def _what_to_do(self) -> LineInFileModule:
        if self.state == "present" and self.line is None:
            raise ValueError("`line` is required for state: present")
        if "\n" in (self.line or "") or "\n" in (self.regexp or ""):
            raise ValueError("`line` and `regexp` are one line each; use blockinfile for several")
        if self.state == "absent" and self.line is None and self.regexp is None:
            raise ValueError("state: absent needs `regexp` or `line`")
        return self


class BlockInFileModule(FileEdit):
    """A block of lines between two marker lines, replaced as a whole."""

    block: str = ""
    marker: str = Field(default="# {mark} MANAGED BY BAKE", description="{mark} becomes BEGIN and END")

    @model_validator(mode="after")
    def _marker(self) -> BlockInFileModule:
        if EDIT_MARK not in self.marker or "\n" in self.marker:
            raise ValueError('`marker` is one line with {mark} in it, e.g. "# {mark} MANAGED BY BAKE"')
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
