"""Nightly graph bakes: the no-op rebuild ratio and the speed-up of -j2 over -j1.

A folder with the debian-base recipe and four independent leaves (local steps only, no
network, so the timing is the toolkit's and Packer's). The first run bakes everything
into a new state folder: the cold run (the engine may still hold the bootstrapped root
filesystem). Then the leaves are changed and baked with -j1, changed again and baked with
-j2 (the base stays cached both times), and finally the same folder is baked again with
nothing changed: that run must start no Packer process. Prints the no-op's share of the
cold run (goal <= 0.02) and of the -j2 run, and the -j2 speed-up (goal >= 1.5); --json.

    DOCKER_HOST=unix:///… python bench/graph_bench.py [--leaves 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LEAF = """\
name: leaf{i}
version: 1.0.0
extends: debian-base
steps:
  - user: {{name: svc{i}, uid: {uid}}}
  - file: {{dest: /etc/leaf{i}.conf, content: "run={run}\\n"}}
  - shell: for n in $(seq 1 300); do echo "$n" >> /var/lib/leaf{i}; done
verify:
  - file: {{path: /etc/leaf{i}.conf, contains: "run={run}"}}
"""


def write_leaves(folder: Path, leaves: int, run: str) -> None:
    for i in range(leaves):
        (folder / f"leaf{i}.yaml").write_text(LEAF.format(i=i, uid=2000 + i, run=run))


def bake_all(folder: Path, jobs: int, env: dict[str, str]) -> tuple[float, dict[str, object]]:
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "bake", "build", "--all", str(folder), "-j", str(jobs), "--offline", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"bake build --all failed:\n{out.stdout}\n{out.stderr[-3000:]}")
    return seconds, json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leaves", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bake-graph-bench-") as tmp:
        folder = Path(tmp) / "recipes"
        folder.mkdir()
        shutil.copy(ROOT / "recipes" / "debian-base.yaml", folder)
        env = dict(os.environ, BAKE_STATE_DIR=str(Path(tmp) / "state"), CI="true")
        env.setdefault("PACKER_TMP_DIR", str(Path(tmp) / "packer-tmp"))
        Path(env["PACKER_TMP_DIR"]).mkdir(parents=True, exist_ok=True)
        write_leaves(folder, args.leaves, "warm")
        t_cold, _ = bake_all(folder, 2, env)  # cold: the base and the leaves, new state
        write_leaves(folder, args.leaves, "j1")
        t_j1, doc_j1 = bake_all(folder, 1, env)
        write_leaves(folder, args.leaves, "j2")
        t_j2, doc_j2 = bake_all(folder, 2, env)
        t_noop, doc_noop = bake_all(folder, 2, env)
    built = {"j1": doc_j1["summary"], "j2": doc_j2["summary"], "noop": doc_noop["summary"]}
    result = {
        "leaves": args.leaves,
        "j1_s": round(t_j1, 2),
        "j2_s": round(t_j2, 2),
        "speedup_j2_over_j1": round(t_j1 / t_j2, 2),
        "speedup_goal": 1.5,
        "cold_s": round(t_cold, 2),
        "noop_s": round(t_noop, 2),
        "noop_ratio_cold": round(t_noop / t_cold, 4),
        "noop_goal": 0.02,
        "noop_ratio_j2": round(t_noop / t_j2, 4),
        "summaries": built,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.leaves} independent leaves: -j1 {t_j1:.1f}s, -j2 {t_j2:.1f}s, "
            f"speed-up {t_j1 / t_j2:.2f}x (goal >= 1.5); cold run {t_cold:.1f}s, no-op rebuild "
            f"{t_noop:.2f}s = {t_noop / t_cold:.3f} of it (goal <= 0.02; "
            f"{t_noop / t_j2:.3f} of the -j2 run)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
