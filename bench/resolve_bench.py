"""How long does a deployer wait for ``NAME@CHANNEL`` -> verified digest?

Builds a ``dir:`` registry of 1,000 images x 20 versions, each build with two attestation
files (documents made directly with the pure functions, written in one signed TUF
transaction: 256 hashed bins), then times the real ``bake resolve`` command in fresh
interpreters, each doing the full verified resolve through python-tuf's client: refresh
timestamp → snapshot → targets → one bin (signatures, versions, expiry, rollback against
the machine's cache), load and hash-check one image document, resolve a channel, and pass
the test gate (the build's signed provenance and PASSED test result).
The baseline, measured in the same run and interleaved with it, is a bare ``python -c
pass``. Goal: at most 0.3 s per resolve, start-up included.

Two bytecode settings are measured: ``cached`` (bytecode of bake's modules cached, as
after ``pip install``; the headline number) and ``uncached`` (every run compiles bake's
sources, as under ``PYTHONDONTWRITEBYTECODE=1`` from a source checkout).

    python bench/resolve_bench.py [--runs 20] [--images 1000] [--versions 20] [--json]
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
GOAL_SECONDS = 0.3
TARGET = "docker"


def build_registry(folder: Path, images: int, versions: int) -> tuple[str, Path, str, str]:
    """Return (registry URL, public key file, spec to resolve, its expected digest)."""
    sys.path.insert(0, str(ROOT))
    from bake.attest import statements as attest
    from bake.attest.digest import canonical_json, sha256_bytes
    from bake.attest.keys import load_signing_key, write_keypair
    from bake.registry import client, model
    from bake.registry.dirstore import DirRegistry
    from bake.registry.layout import attestation_path
    from bake.registry.roles import Signers

    key_path, pub_path = write_keypair(folder / "publisher", None)
    key = load_signing_key(key_path, None)
    registry = DirRegistry.at(folder / "registry")
    now = datetime.now(UTC).replace(microsecond=0)
    resolved = images // 2

    def envelopes(i: int, name: str, v: int, digest: str) -> dict[str, bytes]:
        if i != resolved:  # never read (only the resolved image's are), but signed for
            return {
                kind: canonical_json({"bench": [name, v, kind]}) for kind in ("provenance", "test-result")
            }
        subjects = [(name, digest)]
        tests = attest.test_result(result="PASSED", passed=["bench"], failed=[], configuration=[])
        return {
            "provenance": canonical_json(
                attest.sign_statement(
                    attest.statement(subjects, attest.SLSA_PROVENANCE, {"bench": True}), key
                )
            ),
            "test-result": canonical_json(
                attest.sign_statement(attest.statement(subjects, attest.TEST_RESULT, tests), key)
            ),
        }

    def everything(_: client.Snapshot) -> tuple[dict[str, model.ImageDoc], dict[str, bytes]]:
        docs, files = {}, {}
        for i in range(images):
            name = f"img{i:04d}"
            doc = model.new_image_doc(name)
            for v in range(versions):
                out = sha256_bytes(f"{name}/{v}".encode())
                atts = envelopes(i, name, v, out)
                release = model.Release(
                    name=name,
                    version=f"1.{v}.0",
                    bake_key=sha256_bytes(f"key/{name}/{v}".encode()),
                    created=now - timedelta(days=versions - v),
                    targets={
                        TARGET: model.TargetOutput(out, ref=f"r.example/{name}@{out}"),
                        "qemu": model.TargetOutput(sha256_bytes(f"q/{name}/{v}".encode())),
                    },
                    attestations={kind: sha256_bytes(data) for kind, data in atts.items()},
                )
                doc, version = model.add_build(doc, release)
                files.update({attestation_path(name, version, k): data for k, data in atts.items()})
                doc = model.promote(doc, version, "stable", at=now)
            docs[name] = model.rollback(doc, "stable", at=now)  # some history to replay
        return docs, files

    trust = client.Trust((), folder / "publisher-state", keys=(key.public,))
    client.transact(registry, trust, Signers(key), everything, now=now)
    name = f"img{resolved:04d}"
    expected = sha256_bytes(f"{name}/{versions - 2}".encode())  # stable was rolled back
    return registry.url, pub_path, f"{name}@stable", expected


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmark command failed:\n{done.stderr}")
    return elapsed, done.stdout


def measure(runs: int, env: dict[str, str], resolve_argv: list[str], expected: str) -> dict[str, float]:
    baseline_argv = [sys.executable, "-c", "pass"]
    for _ in range(2):  # warm-up: page cache, bytecode cache
        timed(baseline_argv, env)
        _, out = timed(resolve_argv, env)
        if f"BAKE_IMAGE_DIGEST={expected}" not in out:
            raise SystemExit(f"resolve printed the wrong digest:\n{out}")
    base, resolve = [], []
    for _ in range(runs):  # interleaved, so drift hits both alike
        base.append(timed(baseline_argv, env)[0])
        resolve.append(timed(resolve_argv, env)[0])
    median_base, median_resolve = statistics.median(base), statistics.median(resolve)
    return {
        "baseline_median_s": round(median_base, 4),
        "resolve_median_s": round(median_resolve, 4),
        "resolve_min_s": round(min(resolve), 4),
        "resolve_max_s": round(max(resolve), 4),
        "ratio": round(median_resolve / median_base, 2),
        "resolve_minus_baseline_s": round(median_resolve - median_base, 4),
    }


def in_process(url: str, pub: Path, spec: str, runs: int, state: Path) -> float:
    """Median seconds of a verified read + resolve inside a warm interpreter (imports
    excluded), with the TUF metadata cache of earlier runs, as on a deployer's host."""
    from bake.attest.keys import load_public_key
    from bake.deploy.resolve import resolve
    from bake.deploy.verified import check_attestations
    from bake.registry.backend import open_registry
    from bake.registry.client import Trust, read

    trust = Trust((), state, keys=(load_public_key(pub),))
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        snapshot = read(open_registry(url), trust)
        check_attestations(resolve(snapshot, spec, TARGET), snapshot)
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples), 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bake-resolve-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        url, pub, spec, expected = build_registry(folder, args.images, args.versions)
        build_s = time.perf_counter() - start
        metadata = folder / "registry" / "metadata"
        metadata_bytes = sum(f.stat().st_size for f in metadata.iterdir())
        largest_bin = max(f.stat().st_size for f in metadata.glob("*.bins-*.json"))

        base_env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BAKE_STATE_DIR": str(folder / "state"),
        }
        cached_env = {**base_env, "PYTHONPYCACHEPREFIX": str(folder / "pycache")}
        cached_env.pop("PYTHONDONTWRITEBYTECODE", None)
        uncached_env = {**base_env, "PYTHONDONTWRITEBYTECODE": "1"}
        # the real command a deployer runs: `bake resolve SPEC --registry URL --trust KEY.pub`
        argv = [
            sys.executable, "-m", "bake", "resolve", spec, "--registry", url, "--trust", str(pub),
            "--target", TARGET, "--format", "env",
        ]  # fmt: skip
        cached = measure(args.runs, cached_env, argv, expected)
        uncached = measure(args.runs, uncached_env, argv, expected)
        warm = in_process(url, pub, spec, args.runs, folder / "warm-state")

    result: dict[str, Any] = {
        "images": args.images,
        "versions_per_image": args.versions,
        "runs": args.runs,
        "spec": spec,
        "registry_build_s": round(build_s, 2),
        "metadata_bytes": metadata_bytes,
        "largest_bin_bytes": largest_bin,
        "cached": cached,
        "uncached": uncached,
        "in_process_resolve_median_s": warm,
        "goal_s": GOAL_SECONDS,
        "goal_met": cached["resolve_median_s"] <= GOAL_SECONDS,
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"registry: {args.images} images x {args.versions} versions "
        f"(built in {result['registry_build_s']} s; TUF metadata {metadata_bytes} bytes, "
        f"largest bin {largest_bin} bytes)"
    )
    for label, m in (("cached bytecode", cached), ("no bytecode cache", uncached)):
        print(
            f"{label:>18}: resolve {m['resolve_median_s']:.3f} s median "
            f"(min {m['resolve_min_s']:.3f}, max {m['resolve_max_s']:.3f}) | "
            f"python -c pass {m['baseline_median_s']:.3f} s | ratio {m['ratio']:.2f}x "
            f"| +{m['resolve_minus_baseline_s']:.3f} s"
        )
    print(f"in-process read + resolve (warm): {warm * 1000:.1f} ms")
    verdict = "met" if result["goal_met"] else "NOT met"
    print(f"goal <= {GOAL_SECONDS} s per resolve (cached bytecode): {verdict}")


if __name__ == "__main__":
    main()
