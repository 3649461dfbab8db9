"""Files a recipe references must stay inside the recipe's folder.

Absolute paths, `..` that climbs out, and symlinks that point outside are refused: a
recipe from a colleague must not be able to ship ``~/.ssh/id_ed25519`` into an image.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from bake.recipe.render import Where
from bake.recipe.source import MAX_BYTES


def inside(folder: Path, src: str, where: Where) -> Path:
    rel = PurePosixPath(src)
    if rel.is_absolute():
        raise where.error(f"absolute path {src!r} refused", "give a path relative to the recipe's folder")
    if ".." in rel.parts:
        raise where.error(
            f"path {src!r} leaves the recipe's folder", "keep referenced files beside the recipe"
        )
    root = folder.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise where.error(
            f"path {src!r} resolves outside the recipe's folder (through a symlink) to {path}",
            "copy the file into the recipe's folder instead of linking to it",
        )
    if not path.is_file():
        raise where.error(f"file {src!r} not found in {root}", "check the path and its spelling")
    return path


def read_small(path: Path, where: Where) -> bytes:
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise where.error(
            f"{path} is {size} bytes, over the 1 MiB limit for files in recipes",
            "install large content from a package or URL in a step instead",
        )
    return path.read_bytes()
