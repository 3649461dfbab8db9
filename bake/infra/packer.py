"""Packer: version detection, argv builders and the `-machine-readable` event parser.

Pure except :func:`detect`, which takes the runner as a parameter. Packer 1.7 introduced
`packer init` and `required_plugins`; older versions (Debian 12 ships 1.6.6) bundle the
builders and reject both, so the compiler asks :class:`PackerInfo` what to emit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bake.errors import ToolError
from bake.infra.fsutil import write_cache
from bake.infra.process import Call, Runner

_VERSION_RE = re.compile(r"Packer v?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class PackerInfo:
    version: tuple[int, int, int]
    binary: str = "packer"

    @property
    def text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def has_plugins(self) -> bool:
        """`packer init` and `required_plugins` exist from 1.7.0 on."""
        return self.version >= (1, 7, 0)


DEFAULT = PackerInfo((1, 6, 6))


def parse_version(text: str) -> tuple[int, int, int]:
    m = _VERSION_RE.search(text)
    if m is None:
        raise ToolError(f"could not read the Packer version from {text.strip()[:80]!r}")
    return (int(m[1]), int(m[2]), int(m[3]))


def detect(runner: Runner, binary: str = "packer") -> PackerInfo:
    result = runner(Call(argv=(binary, "version")))
    return PackerInfo(parse_version(result.stdout), binary)


def validate_argv(
    info: PackerInfo, template: Path, variables: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    return (info.binary, "validate", *_var_args(variables), "--", str(template))


def init_argv(info: PackerInfo, template: Path) -> tuple[str, ...]:
    return (info.binary, "init", "--", str(template))


def build_argv(
    info: PackerInfo,
    template: Path,
    variables: Mapping[str, str] | None = None,
    *,
    force: bool = True,
) -> tuple[str, ...]:
    flags = ["-machine-readable", "-color=false", "-on-error=cleanup"]
    if force:
        flags.append("-force")
    return (info.binary, "build", *flags, *_var_args(variables), "--", str(template))


def _var_args(variables: Mapping[str, str] | None) -> list[str]:
    args: list[str] = []
    for k, v in sorted((variables or {}).items()):
        args += ["-var", f"{k}={v}"]
    return args


# --- machine-readable output -------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One machine-readable line: timestamp,target,type,data..."""

    timestamp: int
    target: str
    type: str
    data: tuple[str, ...] = field(default=())

    @property
    def message(self) -> str:
        return self.data[-1] if self.data else ""


@dataclass(frozen=True)
class Artifact:
    build: str
    builder_id: str
    id: str
    string: str
    files: tuple[str, ...] = ()


def unescape(field_text: str) -> str:
    # Packer escapes commas as %!(PACKER_COMMA) and newlines as literal \n, \r
    return field_text.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


def parse_line(line: str) -> Event | None:
    parts = line.rstrip("\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return Event(int(parts[0]), parts[1], parts[2], tuple(unescape(p) for p in parts[3:]))


def parse(lines: Iterable[str]) -> Iterator[Event]:
    for line in lines:
        ev = parse_line(line)
        if ev is not None:
            yield ev


def artifacts(events: Iterable[Event]) -> list[Artifact]:
    """Collect `artifact` events into artifacts, in order."""
    acc: dict[tuple[str, str], dict[str, object]] = {}
    order: list[tuple[str, str]] = []
    for ev in events:
        if ev.type != "artifact" or len(ev.data) < 2:
            continue
        key = (ev.target, ev.data[0])
        if key not in acc:
            acc[key] = {"files": []}
            order.append(key)
        entry = acc[key]
        kind = ev.data[1]
        if kind == "file" and len(ev.data) >= 4:
            files = entry["files"]
            assert isinstance(files, list)
            files.append(ev.data[3])
        elif kind in ("builder-id", "id", "string") and len(ev.data) >= 3:
            entry[kind] = ev.data[2]
    out = []
    for key in order:
        e = acc[key]
        files = e["files"]
        assert isinstance(files, list)
        out.append(
            Artifact(
                build=key[0],
                builder_id=str(e.get("builder-id", "")),
                id=str(e.get("id", "")),
                string=str(e.get("string", "")),
                files=tuple(str(f) for f in files),
            )
        )
    return out


def errors(events: Iterable[Event]) -> list[str]:
    return [
        ev.message for ev in events if ev.type == "error" or (ev.type == "ui" and ev.data[:1] == ("error",))
    ]


def detect_cached(runner: Runner, cache: Path, binary: str = "packer") -> PackerInfo:
    """`detect`, remembered per binary (path, size, mtime): saves a process per command."""
    import json
    import shutil

    path = shutil.which(binary)
    if path is None:
        return detect(runner, binary)  # raises the gateway's "packer not found" error
    st = Path(path).stat()
    stamp = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    try:
        doc = json.loads(cache.read_text())
        if doc.get("stamp") == stamp:
            major, minor, patch = (int(x) for x in doc["version"])
            return PackerInfo((major, minor, patch), binary)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    info = detect(runner, binary)
    write_cache(cache, {"stamp": stamp, "version": list(info.version)})
    return info
