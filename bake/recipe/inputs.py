"""The files a recipe's steps use, read from the recipe's folder: each is a bake input.

A `copy`, an archive for `unarchive`, a key for `apt_repository` ship into the image as
they are; a `template` is rendered on the host (with `item` in a loop). An `ansible:` step
reads every file of its playbook's folder and of its `roles_path` folders. Everything
must stay inside the recipe's folder (see :mod:`bake.recipe.paths`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bake.recipe.models import Handler, Step
from bake.recipe.paths import inside, read_small
from bake.recipe.render import Where, render_string
from bake.recipe.source import Source


@dataclass(frozen=True)
class FileInput:
    """A file a step ships into the image or runs from the host: copied bytes, a template
    rendered on the host, an archive, a key, or one file of an Ansible play's folders."""

    step: int
    src: str  # relative to the recipe's folder
    content: bytes
    digest: str  # of the content shipped (a template's rendered output)
    item: int = 0  # which item of a looped step
    source_digest: str = ""  # of the file as read, where that differs (a template's source)

    @property
    def input_name(self) -> str:
        """Its name among the bake key's inputs."""
        return f"file:{self.src}" + (f"#{self.item}" if self.item else "")


def file_inputs(
    path: Path, source: Source, steps: Sequence[tuple[int, Step]], contexts: Sequence[Mapping[str, Any]]
) -> list[FileInput]:
    """The files of ``steps`` (each with the context it renders in), in step order."""
    out: list[FileInput] = []
    folder = path.parent
    seen: dict[int, int] = {}
    for (i, step), context in zip(steps, contexts, strict=True):
        item = seen[i] = seen.get(i, -1) + 1
        group = "handlers" if isinstance(step, Handler) else "steps"
        n = i - (len(source.data.get("steps") or []) if group == "handlers" else 0)
        module = step.module
        if module == "ansible":
            assert step.ansible is not None
            out += _play_inputs(folder, source, i, (group, n), step)
            continue
        src = _shipped_src(step)
        if src is None:
            continue
        field_name = "key" if module == "apt_repository" else "src"
        where = Where(source, (group, n, module, field_name))
        file = inside(folder, src, where)
        source_digest = ""
        if module == "template":
            raw = read_small(file, where)
            source_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            content = render_string(
                raw.decode("utf-8", errors="strict"), context, Where(_file_source(file), ())
            ).encode()
        else:
            content = _read_bytes(file, where)
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        out.append(FileInput(i, src, content, digest, item, source_digest))
    return out


def _shipped_src(step: Step) -> str | None:
    """The file from the recipe's folder that a step ships into the image, if any."""
    if step.copy_ is not None:
        return step.copy_.src
    if step.template is not None:
        return step.template.src
    if step.unarchive is not None and not step.unarchive.remote_src:
        return step.unarchive.src
    if step.apt_repository is not None:
        return step.apt_repository.key
    return None


MAX_PLAY_FILES = 2000
MAX_PLAY_BYTES = 32 << 20


def _play_inputs(
    folder: Path, source: Source, index: int, at: tuple[str, int], step: Step
) -> list[FileInput]:
    """Every file of the playbook's folder and of each `roles_path` folder: all a play
    and its roles can read. The play runs from a copy of exactly these files."""
    assert step.ansible is not None
    folder = folder.resolve()
    where = Where(source, (*at, "ansible", "playbook"))
    playbook = inside(folder, step.ansible.playbook, where)
    if playbook.parent == folder:
        raise where.error(
            "the playbook must be in a folder of its own (all of that folder is part of the bake key)",
            f"move it and what it reads into a folder beside the recipe, e.g. ansible/{playbook.name}",
        )
    roots = [(playbook.parent, where)]
    for k, rel in enumerate(step.ansible.roles_path):
        w = Where(source, (*at, "ansible", "roles_path", k))
        roots.append((_inside_dir(folder, rel, w), w))
    found: dict[str, Path] = {}
    for root, w in roots:
        for path in sorted(_walk(root, folder, w)):
            found.setdefault(path.relative_to(folder).as_posix(), path)
    if len(found) > MAX_PLAY_FILES:
        raise where.error(
            f"the play's folders hold {len(found)} files, over the limit of {MAX_PLAY_FILES}",
            "keep the playbook and its roles in folders of their own",
        )
    out: list[FileInput] = []
    total = 0
    for rel, path in sorted(found.items()):
        content = _read_bytes(path, Where(source, (*at, "ansible")))
        total += len(content)
        if total > MAX_PLAY_BYTES:
            raise where.error(
                f"the play's folders hold over {MAX_PLAY_BYTES >> 20} MiB", "keep large files out of them"
            )
        out.append(FileInput(index, rel, content, "sha256:" + hashlib.sha256(content).hexdigest()))
    return out


def _inside_dir(folder: Path, rel: str, where: Where) -> Path:
    if rel.startswith("/") or ".." in Path(rel).parts:
        raise where.error(f"path {rel!r} leaves the recipe's folder", "give a folder beside the recipe")
    path = (folder / rel).resolve()
    if not path.is_relative_to(folder):
        raise where.error(f"path {rel!r} resolves outside the recipe's folder to {path}")
    if not path.is_dir():
        raise where.error(f"folder {rel!r} not found in {folder}", "check the path and its spelling")
    return path


def _walk(root: Path, folder: Path, where: Where) -> list[Path]:
    """Files under ``root`` (hidden names and caches left out); a symlink must stay inside
    the recipe's folder, and a symlinked folder is refused."""
    out: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == "__pycache__" or entry.name.endswith(".retry"):
            continue
        if entry.is_symlink():
            target = entry.resolve()
            if not target.is_relative_to(folder):
                raise where.error(
                    f"{entry.relative_to(folder)} links outside the recipe's folder to {target}",
                    "copy the file into the play's folder instead of linking to it",
                )
            if target.is_dir():
                raise where.error(f"{entry.relative_to(folder)} is a symlinked folder", "copy it instead")
        if entry.is_dir():
            out += _walk(entry, folder, where)
        elif entry.is_file():
            out.append(entry)
    return out


def _file_source(path: Path) -> Source:
    return Source(path=path, data=None, positions={})


def _read_bytes(path: Path, where: Where) -> bytes:
    try:
        return read_small(path, where)
    except OSError as exc:
        raise where.error(f"cannot read {path}: {exc.strerror}") from None
