"""Reading a registry as a deployer: verified snapshot, verified resolution.

Kept free of Typer, pydantic and Rich so that `bake resolve` (the command deployers run
on every deploy) starts fast; see bake/entry.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now() -> datetime:
    return datetime.now(UTC)


def settings() -> Any:
    from bake.project import find_root, load_settings

    return load_settings(find_root())


def reader(registry: str | None, trust: list[str] | None) -> tuple[Any, Any, list[Any]]:
    """(registry, snapshot, trusted keys) after verifying signature, freshness, replay."""
    from bake.registry import client
    from bake.registry.backend import open_registry
    from bake.trust import registry_url, trusted_keys

    conf = settings()
    reg = open_registry(registry_url(registry, conf.registry))
    trusted = trusted_keys(trust or list(conf.trust))
    snap = client.read(reg, trusted, state=client.FreshnessState.default(), now=now())
    return reg, snap, trusted


def verified(spec: str, registry: str | None, trust: list[str] | None, target: str) -> tuple[Any, Any]:
    """(registry, resolution) once signature, freshness, revocation, attestations and the
    artifact's bytes all check out."""
    from bake.deploy import resolve
    from bake.verified import check_artifact, check_attestations, localize

    reg, snap, trusted = reader(registry, trust)
    res = localize(resolve(snap, spec, target), reg.url)
    check_attestations(res, snap.load_blob, trusted)
    check_artifact(res)
    return reg, res
