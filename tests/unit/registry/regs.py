"""Registries for the tests: a dir: registry with TUF metadata, published through the
client, with attestations that pass (or fail) the test gate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bake.attest.digest import canonical_json, sha256_bytes
from bake.attest.keys import SigningKey
from bake.attest.statements import SLSA_PROVENANCE, TEST_RESULT, sign_statement, statement, test_result
from bake.registry import client
from bake.registry.dirstore import DirRegistry
from bake.registry.model import Release, TargetOutput
from bake.registry.roles import Signers


def now() -> datetime:
    """The TUF client checks expiry against the real clock: tests write with it too."""
    return datetime.now(UTC).replace(microsecond=0)


def later(**kw: float) -> datetime:
    return now() + timedelta(**kw)


@dataclass
class Setup:
    reg: DirRegistry
    key: SigningKey  # the online key (and root key, as a registry set up implicitly has)
    base: Path

    @property
    def signers(self) -> Signers:
        return Signers(self.key)

    def trust(self, state: str = "state") -> client.Trust:
        return client.Trust((), self.base / state, keys=(self.key.public,))

    def read(self, state: str = "state") -> client.Snapshot:
        return client.read(self.reg, self.trust(state))


def envelopes(key: SigningKey, name: str, digest: str, *, result: str = "PASSED") -> dict[str, bytes]:
    subjects = [(name, digest)]
    failed = ["file /etc/motd"] if result == "FAILED" else []
    tests = test_result(result=result, passed=["package nginx"], failed=failed, configuration=[])
    return {
        "provenance": canonical_json(sign_statement(statement(subjects, SLSA_PROVENANCE, {"b": 1}), key)),
        "test-result": canonical_json(sign_statement(statement(subjects, TEST_RESULT, tests), key)),
    }


def release(name: str, version: str, out: str, atts: dict[str, bytes], parent: str | None = None) -> Release:
    digest = sha256_bytes(f"{name}{version}{out}".encode())
    return Release(
        name,
        version,
        f"key-{out}",
        now(),
        {"docker": TargetOutput(digest, ref=f"r.example/{name}@{digest}")},
        attestations={k: sha256_bytes(v) for k, v in atts.items()},
        parent=parent,
    )


def publish(
    s: Setup,
    name: str = "web",
    version: str = "1.0.0",
    out: str = "a",
    *,
    result: str = "PASSED",
    **kw: object,
) -> client.Published:
    digest = sha256_bytes(f"{name}{version}{out}".encode())
    atts = envelopes(s.key, name, digest, result=result)
    kinds = kw.pop("kinds", None)
    if isinstance(kinds, tuple):
        atts = {k: v for k, v in atts.items() if k in kinds}
    parent = kw.pop("parent", None)
    rel = release(name, version, out, atts, parent=parent if isinstance(parent, str) else None)
    return client.publish(s.reg, s.trust(), s.signers, rel, atts, now=now())


def setup(base: Path) -> Setup:
    return Setup(DirRegistry.at(base / "reg"), SigningKey.generate(), base)
