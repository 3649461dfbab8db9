"""Image documents for the deployer tests: a web image with builds, a channel, refs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bake.attest.digest import sha256_bytes
from bake.registry import model
from bake.registry.client import Snapshot
from bake.registry.model import ImageDoc, Release, TargetOutput

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
URL = "dir:/srv/registry"


def d(text: str) -> str:
    return sha256_bytes(text.encode())


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def release(name: str, version: str, out: str, *, ref: str | None = "digest") -> Release:
    if ref == "digest":
        ref = f"r.example/{name}@{d(out)}"
    return Release(
        name=name,
        version=version,
        bake_key=f"key-{out}",
        created=T0,
        targets={
            "docker": TargetOutput(d(out), ref=ref, image_id=d(f"id-{out}")),
            "qemu": TargetOutput(d(f"q-{out}"), artifact_id=f"{name}-{version}.qcow2"),
        },
        attestations={"provenance": d(f"prov-{out}"), "sbom": d(f"sbom-{out}")},
    )


def build(doc: ImageDoc, *releases: Release) -> ImageDoc:
    for r in releases:
        doc, _ = model.add_build(doc, r)
    return doc


def snap(*docs: ImageDoc, serial: int = 7) -> Snapshot:
    return Snapshot.of(docs, url=URL, serial=serial)
