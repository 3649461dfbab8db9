"""How long does `bake catalog` take on a large registry, and how large do pages get?

Builds a ``dir:`` registry of 1,000 images x 20 versions (one signed TUF transaction,
256 hashed bins), every build with the four attestations a real bake publishes, signed:
a SLSA provenance, a test result (with a skipped check), a CycloneDX SBOM (``--packages``
components with licences; each version upgrades one package) and a file manifest
(``--files`` entries; each version changes one file). Images form a tree (each built on
an earlier one), so lineage graphs and `bake outdated` have work to do.

Then it times, in fresh interpreters, the baseline ``bake ls --json`` (the verified read
of every image document) and ``bake catalog --out DIR --json`` on the same registry, and
prints the catalog's time and its largest page as ratios to the baseline's time and
output.

    python bench/catalog_bench.py [--images 1000] [--versions 20] [--packages 80] [--files 150] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def build_registry(folder: Path, images: int, versions: int, packages: int, files: int) -> tuple[str, Path]:
    """Return (registry URL, the publisher's public key file)."""
    sys.path.insert(0, str(ROOT))
    from bake.attest import sbom
    from bake.attest.digest import canonical_json, sha256_bytes
    from bake.attest.filemanifest import FILE_MANIFEST, Entry, manifest_predicate
    from bake.attest.keys import load_signing_key, write_keypair
    from bake.attest.statements import (
        SLSA_PROVENANCE,
        TEST_RESULT,
        sign_statement,
        slsa_provenance,
        statement,
        test_result,
    )
    from bake.registry import client, model
    from bake.registry.dirstore import DirRegistry
    from bake.registry.layout import attestation_path
    from bake.registry.roles import Signers

    key_path, pub_path = write_keypair(folder / "publisher", None)
    key = load_signing_key(key_path, None)
    registry = DirRegistry.at(folder / "registry")
    now = datetime.now(UTC).replace(microsecond=0)
    dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    copyrights = {
        f"pkg{p:03d}": dep5
        + (
            "\nFiles: *\nLicense: GPL-2+\n\nFiles: x/*\nLicense: MIT\n"
            if p % 3
            else "\nFiles: *\nLicense: BSD-3-clause\n"
        )
        for p in range(packages)
    }

    def envelopes(name: str, v: int, digest: str) -> dict[str, bytes]:
        subjects = [(name, digest)]
        pkgs = [
            sbom.Package(f"pkg{p:03d}", f"1.{v if p == v % packages else 0}-1", "amd64", f"src{p:03d}")
            for p in range(packages)
        ]
        bom = sbom.cyclonedx(
            pkgs,
            image_name=name,
            image_digest=digest,
            timestamp="2024-05-01T12:00:00Z",
            copyrights=copyrights,
        )
        entries = [
            Entry(
                f"/usr/lib/f{i:05d}",
                "file",
                0o644,
                0,
                0,
                sha256_bytes(f"{i}/{v if i == v else 0}".encode())[7:],
            )
            for i in range(files)
        ]
        prov = slsa_provenance(
            build_type="https://bake.invalid/build-types/packer-docker/v1",
            external_parameters={"recipe": name, "version": f"1.{v}.0"},
            resolved_dependencies=[("recipe", sha256_bytes(f"r/{name}/{v}".encode()))],
            builder_id="https://bake.invalid/builder/bake@bench",
            invocation_id=name,
            started="2024-05-01T12:00:00Z",
            finished="2024-05-01T12:00:00Z",
            packer_version="1.6.6",
        )
        tests = test_result(result="PASSED", passed=["package a", "file /etc/b"], failed=[], configuration=[])
        out = {
            "provenance": statement(subjects, SLSA_PROVENANCE, prov),
            "test-result": statement(subjects, TEST_RESULT, tests),
            "sbom": statement(subjects, sbom.CYCLONEDX, bom),
            "files": statement(subjects, FILE_MANIFEST, manifest_predicate(entries, ["/tmp"])),
        }
        return {kind: canonical_json(sign_statement(stmt, key)) for kind, stmt in out.items()}

    def everything(_: client.Snapshot) -> tuple[dict[str, model.ImageDoc], dict[str, bytes]]:
        docs, blobs = {}, {}
        for i in range(images):
            name = f"img{i:04d}"
            parent = f"img{(i - 1) // 4:04d}@1.0.0+1" if i else None  # a tree, four children each
            doc = model.new_image_doc(name)
            for v in range(versions):
                digest = sha256_bytes(f"{name}/{v}".encode())
                atts = envelopes(name, v, digest)
                release = model.Release(
                    name=name,
                    version=f"1.{v}.0",
                    bake_key=sha256_bytes(f"key/{name}/{v}".encode()),
                    created=now - timedelta(days=versions - v),
                    targets={"docker": model.TargetOutput(digest, ref=f"r.example/{name}@{digest}")},
                    attestations={kind: sha256_bytes(data) for kind, data in atts.items()},
                    parent=parent,
                )
                doc, version = model.add_build(doc, release)
                blobs.update({attestation_path(name, version, k): data for k, data in atts.items()})
                doc = model.promote(doc, version, "stable", at=now - timedelta(days=versions - v))
            doc = model.rollback(doc, "stable", at=now)
            docs[name] = (
                model.revoke(doc, "1.3.0+1", "bench: a revoked build", at=now) if versions > 3 else doc
            )
        return docs, blobs

    trust = client.Trust((), folder / "publisher-state", keys=(key.public,))
    client.transact(registry, trust, Signers(key), everything, now=now)
    return registry.url, pub_path


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmark command failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--packages", type=int, default=80)
    parser.add_argument("--files", type=int, default=150)
    parser.add_argument("--runs", type=int, default=3, help="runs of `bake ls --json` (the baseline)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bake-catalog-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        url, pub = build_registry(folder, args.images, args.versions, args.packages, args.files)
        build_s = time.perf_counter() - start
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BAKE_STATE_DIR": str(folder / "state"),
            "CI": "true",  # plain progress lines on stderr
        }
        common = ["--registry", url, "--trust", str(pub), "--json"]
        bake = [sys.executable, "-m", "bake"]
        timed([*bake, "ls", *common], env)  # warm-up: page cache, bytecode, the TUF cache
        ls_runs = [timed([*bake, "ls", *common], env) for _ in range(args.runs)]
        ls_s = statistics.median(t for t, _ in ls_runs)
        ls_bytes = len(ls_runs[0][1].encode())
        catalog_s, out = timed([*bake, "catalog", "--out", str(folder / "site"), *common], env)
        doc = json.loads(out)
        if not doc["ok"] or doc["versions"] != args.images * args.versions:
            raise SystemExit(f"the catalog is not what was published: {out[:2000]}")

    result: dict[str, Any] = {
        "images": args.images,
        "versions_per_image": args.versions,
        "packages_per_sbom": args.packages,
        "files_per_manifest": args.files,
        "registry_build_s": round(build_s, 1),
        "ls_median_s": round(ls_s, 3),
        "ls_json_bytes": ls_bytes,
        "catalog_s": round(catalog_s, 2),
        "catalog_in_process_s": doc["seconds"],
        "ratio_time": round(catalog_s / ls_s, 1),
        "pages": doc["pages"],
        "site_bytes": doc["bytes"],
        "largest_page": doc["largest_page"],
        "ratio_largest_page_to_ls_output": round(doc["largest_page"]["bytes"] / ls_bytes, 3),
        "ms_per_version": round(catalog_s * 1000 / (args.images * args.versions), 2),
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"registry: {args.images} images x {args.versions} versions, SBOMs of {args.packages} packages, "
        f"manifests of {args.files} files (built in {result['registry_build_s']} s)"
    )
    print(f"baseline  bake ls --json: {ls_s:.2f} s median of {args.runs}, {ls_bytes / 1e6:.2f} MB of output")
    print(
        f"bake catalog: {catalog_s:.1f} s = {result['ratio_time']}x bake ls "
        f"({result['ms_per_version']} ms per version), {doc['pages']} pages, {doc['bytes'] / 1e6:.0f} MB"
    )
    largest = doc["largest_page"]
    print(
        f"largest page: {largest['path']} {largest['bytes'] / 1e3:.0f} kB "
        f"= {result['ratio_largest_page_to_ls_output']}x the bake ls --json output"
    )


if __name__ == "__main__":
    main()
