"""Benchmark bake.digest.sha256_file against `openssl dgst -sha256`, and show its memory.

Why: images are hashed on every build, push and verify, so hashing must run at least as
fast as the usual command-line tool (goal: 1.1x openssl's throughput) while its memory
stays flat however big the file is (goal: tracemalloc peak under 16 MiB).

Both tools read the same file from a warm page cache, alternately, best of --repeat.
Run: python bench/digest_bench.py [--size-mib N] [--dir D] [--repeat N] [--json] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so the bench runs from a checkout without installing

from bake.attest.digest import CHUNK, sha256_file  # noqa: E402  # needs the sys.path entry above

GOAL_RATIO = 1.1
GOAL_PEAK = 16 * CHUNK
MIB = 1 << 20

# Peak RSS of the child itself: VmHWM, since ru_maxrss on Linux carries over the
# parent's peak across fork+exec and so would hide the child's own growth.
_CHILD = """
import resource, sys
from pathlib import Path
from bake.attest.digest import sha256_file

def peak_kib():
    try:
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

before = peak_kib()
digest = sha256_file(Path(sys.argv[1]))
print(before, peak_kib(), digest)
"""


def ensure_file(folder: Path, size_mib: int) -> Path:
    """The bench file of *size_mib* MiB in *folder*, written in 1 MiB chunks if missing."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"random-{size_mib}MiB.bin"
    if path.exists() and path.stat().st_size == size_mib * MIB:
        return path
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(MIB))
    tmp.replace(path)
    return path


def best_of(repeat: int, fn: Callable[[], str]) -> tuple[float, str]:
    """Shortest wall time of *repeat* calls of *fn*, and what it returned."""
    best, result = float("inf"), ""
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def openssl_digest(openssl: str, path: Path) -> str:
    out = subprocess.run(
        [openssl, "dgst", "-sha256", os.fspath(path)],
        check=True,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    return "sha256:" + out.rsplit("=", 1)[1].strip()


def tracemalloc_peak(path: Path) -> int:
    tracemalloc.start()
    try:
        sha256_file(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def child_rss_kib(path: Path) -> tuple[int, int]:
    """(peak RSS after imports, peak RSS after hashing) of a fresh interpreter, in KiB."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, os.fspath(path)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    ).stdout.split()
    return int(out[0]), int(out[1])


def run(folder: Path, size_mib: int, repeat: int) -> dict[str, object]:
    path = ensure_file(folder, size_mib)
    size = path.stat().st_size
    openssl = shutil.which("openssl")

    bake_times: list[float] = []
    openssl_times: list[float] = []
    bake_digest = openssl_hex = ""
    for _ in range(repeat):  # alternate, so both see the same machine state
        t, bake_digest = best_of(1, lambda: sha256_file(path))
        bake_times.append(t)
        if openssl:
            t, openssl_hex = best_of(1, lambda: openssl_digest(openssl, path))
            openssl_times.append(t)

    bake_s = min(bake_times)
    openssl_s = min(openssl_times) if openssl_times else None
    ratio = (openssl_s / bake_s) if openssl_s else None
    peak = tracemalloc_peak(path)
    rss_before, rss_after = child_rss_kib(path)
    ok = (ratio is None or ratio >= GOAL_RATIO) and peak < GOAL_PEAK
    return {
        "file": os.fspath(path),
        "size_bytes": size,
        "repeat": repeat,
        "digest": bake_digest,
        "digests_match": (openssl_hex == bake_digest) if openssl else None,
        "bake": {"seconds": bake_s, "mb_per_s": size / bake_s / 1e6, "runs": bake_times},
        "openssl": (
            {"seconds": openssl_s, "mb_per_s": size / openssl_s / 1e6, "runs": openssl_times}
            if openssl_s
            else None
        ),
        "ratio": ratio,
        "goal_ratio": GOAL_RATIO,
        "tracemalloc_peak_bytes": peak,
        "goal_peak_bytes": GOAL_PEAK,
        "child_peak_rss_kib": {"after_import": rss_before, "after_hash": rss_after},
        "ok": ok,
    }


def human(r: dict[str, object]) -> str:
    b = r["bake"]
    o = r["openssl"]
    rss = r["child_peak_rss_kib"]
    assert isinstance(b, dict)
    assert isinstance(rss, dict)
    size_mib = int(str(r["size_bytes"])) / MIB
    peak_mib = int(str(r["tracemalloc_peak_bytes"])) / MIB
    lines = [f"{r['file']} ({size_mib:.0f} MiB), best of {r['repeat']}, warm page cache"]
    lines.append(f"  bake sha256_file : {b['mb_per_s']:8.0f} MB/s  ({b['seconds']:.3f} s)")
    if isinstance(o, dict):
        lines.append(f"  openssl dgst     : {o['mb_per_s']:8.0f} MB/s  ({o['seconds']:.3f} s)")
        lines.append(
            f"  ratio bake/openssl throughput: {r['ratio']:.2f} (goal >= {GOAL_RATIO}); "
            f"digests match: {r['digests_match']}"
        )
    else:
        lines.append("  openssl not found: no comparison")
    lines.append(
        f"  memory: tracemalloc peak {peak_mib:.1f} MiB (goal < {GOAL_PEAK / MIB:.0f} MiB); "
        f"child peak RSS {rss['after_import'] / 1024:.1f} MiB after import, "
        f"{rss['after_hash'] / 1024:.1f} MiB after hashing"
    )
    lines.append(f"  {'OK' if r['ok'] else 'GOAL MISSED'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bake-bench"))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args(argv)
    if args.size_mib <= 0 or args.repeat <= 0:
        parser.error("--size-mib and --repeat must be positive")
    result = run(args.dir, args.size_mib, args.repeat)
    print(json.dumps(result, indent=2) if args.json else human(result))
    return 1 if args.check and not result["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
