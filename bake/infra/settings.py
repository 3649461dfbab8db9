"""Where bake keeps its state, and the project config file.

State (build records, rendered templates, the private dockerd, bootstrap tarballs) lives in
`.bake/` under the project root, or BAKE_STATE_DIR. Settings come from, later winning:
`bake.toml` in the project root (`[bake]` table) < environment (BAKE_REGISTRY, BAKE_TRUST,
BAKE_SIGNING_KEY, BAKE_LEASE_SECONDS) < command-line flags.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bake.errors import BakeError

CONFIG_FILE = "bake.toml"
KEYS = ("registry", "trust", "signing_key", "recipes_path", "state_dir", "lease_seconds")


@dataclass(frozen=True)
class Settings:
    registry: str | None = None
    trust: tuple[str, ...] = ()
    signing_key: str | None = None
    recipes_path: tuple[str, ...] = ()
    state_dir: str | None = None
    lease_seconds: float = 120.0  # a bake lease not renewed for this long passes to another runner


def find_root(start: Path | None = None) -> Path:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file() or (folder / ".git").exists():
            return folder
    return here


def load_settings(root: Path, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    data: dict[str, object] = {}
    path = root / CONFIG_FILE
    if path.is_file():
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise BakeError(f"{path}: {exc}", "fix the TOML syntax") from None
        table = doc.get("bake", {})
        if not isinstance(table, dict):
            raise BakeError(f"{path}: [bake] must be a table")
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise BakeError(
                f"{path}: unknown keys in [bake]: {', '.join(unknown)}", f"known: {', '.join(KEYS)}"
            )
        data.update(table)
    if env.get("BAKE_REGISTRY"):
        data["registry"] = env["BAKE_REGISTRY"]
    if env.get("BAKE_TRUST"):
        data["trust"] = env["BAKE_TRUST"].split(os.pathsep)
    if env.get("BAKE_SIGNING_KEY"):
        data["signing_key"] = env["BAKE_SIGNING_KEY"]
    trust = data.get("trust", ())
    if isinstance(trust, str):
        trust = (trust,)
    rp = data.get("recipes_path", ())
    if isinstance(rp, str):
        rp = (rp,)
    lease = env.get("BAKE_LEASE_SECONDS") or data.get("lease_seconds") or 120.0
    try:
        lease_seconds = float(lease)  # type: ignore[arg-type]  # str, int or float: checked here
    except (TypeError, ValueError):
        raise BakeError(f"lease_seconds must be a number of seconds, not {lease!r}") from None
    if lease_seconds < 3:
        raise BakeError(f"lease_seconds {lease_seconds} is too short", "give 3 seconds or more (default 120)")
    return Settings(
        registry=_opt_str(data.get("registry")),
        trust=tuple(str(t) for t in trust) if isinstance(trust, list | tuple) else (),
        signing_key=_opt_str(data.get("signing_key")),
        recipes_path=tuple(str(p) for p in rp) if isinstance(rp, list | tuple) else (),
        state_dir=_opt_str(env.get("BAKE_STATE_DIR") or data.get("state_dir")),
        lease_seconds=lease_seconds,
    )


def _opt_str(v: object) -> str | None:
    return str(v) if v is not None else None


def state_dir(root: Path, settings: Settings) -> Path:
    d = Path(settings.state_dir) if settings.state_dir else root / ".bake"
    d.mkdir(parents=True, exist_ok=True)
    return d.resolve()
