"""Benchmark a full drift check of a running container against a naive file-by-file audit.

Why: drift is checked on live instances, often many of them; it has to be one streamed
listing with hashes, not a command per file. Against a running container of the image
(its own entrypoint: nginx for web), measured in the same run, round by round:

  bake           `bake.drift.check_drift(docker://C)` as `bake drift` runs it: the container
                 runs the manifest's image, so only its writable layer is read (the engine's
                 list of changes, then each changed path), compared with the image's
                 manifest (recorded once beforehand, as at bake)
  bake-export    the same with `full=True` (`bake drift --full`): docker export, every path
                 hashed as it streams
  bake-find      the ssh:// pipeline (one GNU find + sha256sum batches) run via docker exec
                 and compared the same way: what an ssh:// instance costs, minus ssh
  naive-each     `docker exec C find / -xdev -type f -exec sha256sum {} \\;`
                 (one sha256sum per file, as a naive auditor would)
  naive-batch    the same with `{} +` (hashes only: no metadata, no compare)

Ratios are baseline / bake (higher is better); each number is the median of --repeat
rounds. The rounds run on the fresh container, then again after a hand change (a page
edited, a mode changed, a file added, a folder removed): "changed". Also reported: the
peak memory (tracemalloc) of one check beyond the manifest.

    python bench/drift_bench.py [--image bake/web:1.4.0] [--repeat 3] [--json]

Needs a Docker engine (DOCKER_HOST) that has the image.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so the bench runs from a checkout without installing

from bake.attest import filemanifest as fm  # noqa: E402  # needs the sys.path entry above
from bake.attest.filemanifest import Entry  # noqa: E402
from bake.deploy import drift  # noqa: E402
from bake.infra import process  # noqa: E402
from bake.targets.docker import engine as docker  # noqa: E402
from bake.targets.docker.engine import Engine  # noqa: E402
from bake.targets.docker.evidence import DRIFT_LABEL, collect_image_manifest  # noqa: E402

# nginx makes its temporary folders at start (run-time state, like a recipe's `volatile:`).
DEFAULT_VOLATILE = ["/var/lib/nginx"]


def docker_argv(*argv: str) -> list[str]:
    return ["docker", *argv]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def naive(container: str, terminator: str) -> int:
    """The naive audit; returns the number of files it hashed."""
    out = subprocess.run(
        docker_argv(
            "exec", container, "find", "/", "-xdev", "-type", "f", "-exec", "sha256sum", "{}", terminator
        ),
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    return out.count(b"\n")


def bake_check(
    eng: Engine, manifest: list[Entry], container: str, volatile: list[str], image: str, *, full: bool = False
) -> drift.DriftReport:
    url = f"docker://{container}"
    return drift.check_drift(process.run, eng, manifest, url, volatile, image_id=image, full=full)


HAND_CHANGE = (
    "echo changed > /srv/www/index.html && chmod 0600 /etc/nginx/conf.d/site.conf && "
    "touch /usr/local/bin/extra && rm -rf /usr/share/doc/curl"
)


def bake_find(eng: Engine, manifest: list[Entry], container: str, volatile: list[str]) -> drift.DriftReport:
    vol = fm.volatile_set(volatile)
    with process.stream(eng.call("exec", container, "sh", "-c", fm.find_command(vol))) as out:
        return drift.compare(manifest, fm.find_entries(out), vol)


def wait_running(eng: Engine, cid: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not docker.container_state(process.run, eng, cid).get("Running"):
        if time.monotonic() > deadline:
            raise SystemExit(f"container {cid[:12]} did not start")
        time.sleep(0.2)
    time.sleep(1.0)  # let the service settle (nginx creates its folders)


def run(eng: Engine, ref: str, repeat: int, volatile: list[str]) -> dict[str, Any]:
    image = process.run(eng.call("image", "inspect", "--format", "{{.Id}}", "--", ref)).stdout.strip()
    start = time.perf_counter()
    manifest = collect_image_manifest(process.run, eng, image, volatile)
    manifest_s = time.perf_counter() - start
    name = f"bake-drift-bench-{secrets.token_hex(4)}"
    cid = docker.run_detached(process.run, eng, image, name, labels={DRIFT_LABEL: "bench"})
    methods = ("bake", "bake_export", "bake_find", "naive_each", "naive_batch")
    times: dict[str, list[float]] = {k: [] for k in (*methods, "bake_changed", "naive_batch_changed")}
    try:
        wait_running(eng, cid)
        first = bake_check(eng, manifest, name, volatile, image, full=True)  # warms the page cache
        layer = bake_check(eng, manifest, name, volatile, image)
        if layer.to_json() != {**first.to_json(), "method": "layer"}:
            raise SystemExit("the writable-layer check and the full export disagree")
        files = 0
        for _ in range(repeat):  # round by round, so every method sees the same machine
            times["bake"].append(timed(lambda: bake_check(eng, manifest, name, volatile, image)))
            times["bake_export"].append(
                timed(lambda: bake_check(eng, manifest, name, volatile, image, full=True))
            )
            times["bake_find"].append(timed(lambda: bake_find(eng, manifest, name, volatile)))
            start = time.perf_counter()
            files = naive(name, ";")
            times["naive_each"].append(time.perf_counter() - start)
            times["naive_batch"].append(timed(lambda: naive(name, "+")))
        tracemalloc.start()
        try:
            bake_check(eng, manifest, name, volatile, image, full=True)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        subprocess.run(docker_argv("exec", name, "sh", "-ec", HAND_CHANGE), check=True, capture_output=True)
        changed = bake_check(eng, manifest, name, volatile, image)
        if changed.clean or changed.method != "layer":
            raise SystemExit(f"the hand change was not seen by the writable-layer check ({changed.method})")
        for _ in range(repeat):
            times["bake_changed"].append(timed(lambda: bake_check(eng, manifest, name, volatile, image)))
            times["naive_batch_changed"].append(timed(lambda: naive(name, "+")))
    finally:
        docker.remove_container(process.run, eng, cid)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "image": ref,
        "entries": len(manifest),
        "files_hashed_by_naive": files,
        "repeat": repeat,
        "clean": first.clean,
        "method": layer.method,
        "manifest_seconds": round(manifest_s, 3),
        "seconds": {k: round(v, 3) for k, v in med.items()},
        "runs": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "ratio_naive_each": round(med["naive_each"] / med["bake"], 2),
        "ratio_naive_batch": round(med["naive_batch"] / med["bake"], 2),
        "ratio_naive_batch_vs_bake_export": round(med["naive_batch"] / med["bake_export"], 2),
        "ratio_naive_batch_changed": round(med["naive_batch_changed"] / med["bake_changed"], 2),
        "goal": 2.0,
        "met": med["naive_batch"] / med["bake"] >= 2.0,
        "ratio_naive_each_vs_bake_find": round(med["naive_each"] / med["bake_find"], 2),
        "ratio_naive_batch_vs_bake_find": round(med["naive_batch"] / med["bake_find"], 2),
        "check_peak_memory_mib": round(peak / (1 << 20), 1),
    }


def human(r: dict[str, Any]) -> str:
    s = r["seconds"]
    return "\n".join(
        [
            f"{r['image']}: {r['entries']:,} manifest entries, {r['files_hashed_by_naive']:,} regular files; "
            f"median of {r['repeat']}; fresh container {'clean' if r['clean'] else 'NOT clean'}",
            f"  manifest at bake (create + export + rm)   : {r['manifest_seconds']:7.2f} s",
            f"  bake drift check, docker:// (layer)       : {s['bake']:7.2f} s",
            f"  bake drift check, docker:// --full        : {s['bake_export']:7.2f} s",
            f"  bake drift check, find pipeline (exec)    : {s['bake_find']:7.2f} s",
            f"  naive find -exec sha256sum {{}} \\;         : {s['naive_each']:7.2f} s",
            f"  naive find -exec sha256sum {{}} +          : {s['naive_batch']:7.2f} s",
            f"  ratio naive-each / bake  : {r['ratio_naive_each']:6.2f}x   "
            f"(vs find pipeline {r['ratio_naive_each_vs_bake_find']:.2f}x)",
            f"  ratio naive-batch / bake : {r['ratio_naive_batch']:6.2f}x   (goal >= 2: "
            f"{'met' if r['met'] else 'NOT met'}; --full {r['ratio_naive_batch_vs_bake_export']:.2f}x, "
            f"find pipeline {r['ratio_naive_batch_vs_bake_find']:.2f}x)",
            f"  after a hand change: bake {s['bake_changed']:.2f} s, naive-batch "
            f"{s['naive_batch_changed']:.2f} s, ratio {r['ratio_naive_batch_changed']:.2f}x",
            f"  peak Python memory of one check (beyond the manifest): {r['check_peak_memory_mib']} MiB",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--image", default="bake/web:1.4.0")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--volatile", action="append", default=None, help="extra volatile path (default /var/lib/nginx)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.repeat <= 0:
        parser.error("--repeat must be positive")
    host = os.environ.get("DOCKER_HOST", docker.DEFAULT_SOCKET)
    result = run(Engine(host), args.image, args.repeat, args.volatile or DEFAULT_VOLATILE)
    print(json.dumps(result, indent=2) if args.json else human(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
