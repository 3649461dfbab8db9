"""A small real registry for the catalog tests: TUF metadata, signed attestations made by
bake's own predicate builders (provenance, test result with a skipped check, CycloneDX
SBOM with licences, file manifest), a parent image, channels, a revocation whose reason
tries to inject a script, and a version whose attestation is signed by a stranger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bake.attest import sbom
from bake.attest.digest import canonical_json, sha256_bytes
from bake.attest.filemanifest import FILE_MANIFEST, Entry, manifest_predicate
from bake.attest.keys import SigningKey, load_signing_key, write_keypair
from bake.attest.predicates import provenance, test_results
from bake.attest.statements import SLSA_PROVENANCE, TEST_RESULT, sign_statement, statement
from bake.record import BuildRecord
from bake.registry import client, model
from bake.registry.client import Snapshot
from bake.registry.dirstore import DirRegistry
from bake.registry.layout import attestation_path
from bake.registry.roles import Signers
from bake.targets.base import Artifact
from tests.unit.registry.regs import now

EVIL = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
STATUS = """Package: {name}
Status: install ok installed
Architecture: amd64
Version: {version}

"""


def dpkg(packages: Sequence[tuple[str, str]]) -> str:
    return "".join(STATUS.format(name=n, version=v) for n, v in packages)


def record(name: str, version: str, key: str, *, skipped: bool = True, failed: bool = False) -> BuildRecord:
    results = [
        {"test": "t1", "title": "package nginx-light", "outcome": "passed", "message": ""},
        {"test": "t2", "title": "port 8080", "outcome": "failed" if failed else "passed", "message": ""},
    ]
    if skipped:
        results.append(
            {
                "test": "s1",
                "title": "nginx runs as a systemd unit",
                "outcome": "skipped",
                "message": "when: target == 'qemu'",
            }
        )
    return BuildRecord(
        status="good",
        name=name,
        version=version,
        target="docker",
        bake_key=key,
        recipe_path=f"recipes/{name}.yaml",
        packer_version="1.6.6",
        created="2024-05-01T12:00:00Z",
        artifact=Artifact("docker-image", "id"),
        inputs={"recipe": sha256_bytes(key.encode()), "packer": sha256_bytes(b"packer")},
        verify={"results": results, "checks": [{"package": {"name": "nginx-light"}}]},
    )


def files(extra: Sequence[Entry] = ()) -> list[Entry]:
    return [
        Entry("/etc", "dir", 0o755, 0, 0),
        Entry("/etc/motd", "file", 0o644, 0, 0, sha256_bytes(b"motd")[7:]),
        Entry("/usr/bin/su", "file", 0o4755, 0, 0, sha256_bytes(b"su")[7:]),
        *extra,
    ]


@dataclass
class Built:
    url: str
    key: SigningKey
    pub: Path  # the root (and online) public key, for --trust
    snapshot: Snapshot
    base: Path


def dep5(licenses: Sequence[str]) -> str:
    """A machine-readable copyright file naming ``licenses``."""
    files = "".join(f"\nFiles: part{i}/*\nLicense: {name}\n" for i, name in enumerate(licenses))
    return "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n" + files


def envelopes(
    key: SigningKey,
    name: str,
    version: str,
    digest: str,
    packages: Sequence[tuple[str, str]],
    entries: Sequence[Entry],
    *,
    failed: bool = False,
    licenses: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, bytes]:
    subjects = [(name, digest)]
    rec = record(name, version, sha256_bytes(f"key-{name}-{version}".encode()), failed=failed)
    bom = sbom.cyclonedx(
        sbom.parse_dpkg_status(dpkg(packages)),
        image_name=name,
        image_digest=digest,
        timestamp="2024-05-01T12:00:00Z",
        copyrights={pkg: dep5(names) for pkg, names in (licenses or {}).items()},
    )
    out = {
        "provenance": statement(subjects, SLSA_PROVENANCE, provenance(rec, None)),
        "test-result": statement(subjects, TEST_RESULT, test_results(rec)),
        "sbom": statement(subjects, sbom.CYCLONEDX, bom),
        "files": statement(subjects, FILE_MANIFEST, manifest_predicate(entries, ["/tmp"])),
    }
    return {k: canonical_json(sign_statement(v, key)) for k, v in out.items()}


def build_registry(base: Path) -> Built:
    key_path, pub_path = write_keypair(base / "publisher", None)
    key, stranger = load_signing_key(key_path, None), SigningKey.generate()
    registry = DirRegistry.at(base / "reg")
    t0 = now() - timedelta(days=3)
    web_v1 = [("nginx-light", "1.22.1-9"), ("curl", "7.88.1-10"), ("libold", "1.0-1")]
    web_v2 = [("nginx-light", "1.22.1-9+deb12u1"), ("curl", "7.88.1-10"), ("libnew", "2.0-1")]
    plan = [
        # name, version, packages, files, parent, signer, failed
        ("debian-base", "1.0.0", [("libc6", "2.36-9")], files(), None, key, False),
        ("debian-base", "1.1.0", [("libc6", "2.36-9+deb12u4")], files(), None, key, False),
        ("web", "1.0.0", web_v1, files(), "debian-base@1.0.0+1", key, False),
        ("web", "1.1.0", web_v2, files([Entry("/srv/www/index.html", "file", 0o644, 1001, 1001, "ab" * 32)]),
         "debian-base@1.0.0+1", key, False),
        ("app", "0.1.0", [("python3", "3.11.2-1")], files(), "web@1.1.0+1", stranger, False),
    ]  # fmt: skip
    licenses = {"nginx-light": ("BSD-2-clause",), "curl": ("curl", "ISC")}

    def everything(_: Snapshot) -> tuple[dict[str, model.ImageDoc], dict[str, bytes]]:
        docs: dict[str, model.ImageDoc] = {}
        blobs: dict[str, bytes] = {}
        for i, (name, version, pkgs, entries, parent, signer, failed) in enumerate(plan):
            digest = sha256_bytes(f"{name}/{version}".encode())
            atts = envelopes(signer, name, version, digest, pkgs, entries, failed=failed, licenses=licenses)
            rel = model.Release(
                name,
                version,
                sha256_bytes(f"key-{name}-{version}".encode()),
                t0 + timedelta(hours=i),
                {"docker": model.TargetOutput(digest, ref=f"oci-layout:oci/{name}@{digest}")},
                attestations={k: sha256_bytes(v) for k, v in atts.items()},
                parent=parent,
            )
            doc, full = model.add_build(docs.get(name) or model.new_image_doc(name), rel)
            blobs.update({attestation_path(name, full, k): v for k, v in atts.items()})
            docs[name] = doc
        web = model.promote(docs["web"], "1.0.0+1", "stable", at=t0 + timedelta(hours=5))
        web = model.promote(web, "1.1.0+1", "stable", at=t0 + timedelta(hours=6))
        web = model.promote(web, "1.1.0+1", "beta", at=t0 + timedelta(hours=6))
        web = model.rollback(web, "stable", at=t0 + timedelta(hours=7))
        docs["web"] = model.revoke(web, "1.1.0+1", EVIL, at=t0 + timedelta(hours=8))
        docs["debian-base"] = model.promote(docs["debian-base"], "1.1.0+1", "stable", at=t0)
        return docs, blobs

    trust = client.Trust((), base / "writer-state", keys=(key.public,))
    client.transact(registry, trust, Signers(key), everything, now=now())
    reader = client.Trust((), base / "reader-state", keys=(key.public,))
    return Built(registry.url, key, pub_path, client.read(registry, reader), base)
