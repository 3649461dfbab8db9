"""Build records: what one bake produced, written atomically as JSON.

A record is `good` only when Packer succeeded AND every verify check passed; a failed bake
writes a `failed` record (useful for CI reports) that nothing will ever publish. Records
live in the state folder by recipe, target and bake key, which is also how a later bake
finds a good parent without rebuilding it. The artifact is written and read by its target
(each target keeps its own fields), so a record reads the same whatever made it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bake import targets
from bake.errors import BakeError
from bake.infra.fsutil import write_json
from bake.targets.base import Artifact

SCHEMA = "bake.record/v1"


@dataclass(frozen=True)
class BuildRecord:
    status: str  # good | failed
    name: str
    version: str
    target: str
    bake_key: str
    recipe_path: str
    packer_version: str
    created: str
    artifact: Artifact
    inputs: Mapping[str, str] = field(default_factory=dict)
    parent: Mapping[str, Any] | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    verify: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    # added later in bake.record/v1 (absent from older records, which still load):
    started: str | None = None  # when the bake began (RFC 3339); `created` is when it ended
    invocation_id: str | None = None  # unique per bake run
    sources: Mapping[str, str] = field(default_factory=dict)  # input -> digest of the file as read
    byproducts: Mapping[str, str] = field(default_factory=dict)  # what the bake rendered -> digest

    @property
    def good(self) -> bool:
        return self.status == "good"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "status": self.status,
            "name": self.name,
            "version": self.version,
            "target": self.target,
            "bake_key": self.bake_key,
            "recipe_path": self.recipe_path,
            "packer_version": self.packer_version,
            "created": self.created,
            "inputs": dict(self.inputs),
            "artifact": targets.get(self.target).artifact_to_json(self.artifact),
            "parent": dict(self.parent) if self.parent else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "verify": dict(self.verify),
            "error": self.error,
            "started": self.started,
            "invocation_id": self.invocation_id,
            "sources": dict(self.sources),
            "byproducts": dict(self.byproducts),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], origin: str = "record") -> BuildRecord:
        if doc.get("schema") != SCHEMA:
            raise BakeError(f"{origin}: not a bake build record (schema {doc.get('schema')!r})")
        try:
            target = str(doc["target"])
            return cls(
                status=str(doc["status"]),
                name=str(doc["name"]),
                version=str(doc["version"]),
                target=target,
                bake_key=str(doc["bake_key"]),
                recipe_path=str(doc["recipe_path"]),
                packer_version=str(doc["packer_version"]),
                created=str(doc["created"]),
                inputs=dict(doc.get("inputs") or {}),
                artifact=targets.get(target).artifact_from_json(dict(doc.get("artifact") or {})),
                parent=doc.get("parent"),
                timings=dict(doc.get("timings") or {}),
                verify=dict(doc.get("verify") or {}),
                error=doc.get("error"),
                started=doc.get("started"),
                invocation_id=doc.get("invocation_id"),
                sources=dict(doc.get("sources") or {}),
                byproducts=dict(doc.get("byproducts") or {}),
            )
        except KeyError as exc:
            raise BakeError(f"{origin}: build record lacks field {exc}") from None


def record_path(state: Path, name: str, target: str, key: str) -> Path:
    return state / "records" / name / target / f"{key.removeprefix('sha256:')}.json"


def save(state: Path, record: BuildRecord) -> Path:
    path = record_path(state, record.name, record.target, record.bake_key)
    write_json(path, record.to_json())
    return path


def load(path: Path) -> BuildRecord:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BakeError(f"{path}: no such build record", "bake build writes one; see its output") from None
    except json.JSONDecodeError as exc:
        raise BakeError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BakeError(f"{path}: not a bake build record (not a JSON object)")
    return BuildRecord.from_json(doc, str(path))


def find_good(state: Path, name: str, target: str, key: str) -> BuildRecord | None:
    path = record_path(state, name, target, key)
    if not path.is_file():
        return None
    rec = load(path)
    return rec if rec.good else None


def latest_good(state: Path, name: str, target: str) -> BuildRecord | None:
    """The most recent good record of a recipe and target, whatever its bake key."""
    folder = state / "records" / name / target
    best: BuildRecord | None = None
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            rec = load(path)
        except BakeError:
            continue
        if rec.good and (best is None or rec.created > best.created):
            best = rec
    return best
