"""A fresh CI runner bakes a changed child whose parent the registry already holds.

Two fresh runners, each a new state folder and a new, empty Docker engine (own bridge, no
network for containers: the recipes need none; mmdebstrap bootstraps on the host):

- baseline, what a runner did before parents came from the registry: the registry lacks
  the parent, so the runner bootstraps it with mmdebstrap, bakes, verifies and publishes
  it, then bakes, verifies and publishes the child;
- bake now: the registry holds the parent (the baseline's), the child changed: the runner
  pulls the parent by digest and bakes, verifies and publishes the child only.

Prints the ratio now / baseline (goal <= 0.5) and each run's seconds; --json for CI.

    python bench/fleet_bench.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.engines import fresh_engines  # noqa: E402 - after the path

GOAL = 0.5
BASE = """\
name: bench-base
version: 1.0.0
base: {bootstrap: {distro: debian, suite: bookworm, variant: minbase}}
targets: {docker: {cmd: [/bin/bash]}}
steps:
  - file: {dest: /etc/bench-base, content: "base\\n"}
verify:
  - file: {path: /etc/bench-base, contains: base}
  - command: {run: cat /etc/debian_version, stdout: "12."}
"""
CHILD = """\
name: bench-child
version: 1.0.0
extends: bench-base
steps:
  - shell: echo {marker} > /etc/bench-child
verify:
  - file: {{path: /etc/bench-child, contains: {marker}}}
"""


def build(recipe: Path, env: dict[str, str]) -> tuple[float, dict[str, object]]:
    t0 = time.monotonic()
    argv = [sys.executable, "-m", "bake", "build", str(recipe), "--offline", "--json"]
    out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"bake build failed:\n{out.stdout}\n{out.stderr[-3000:]}")
    return seconds, json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bake-fleet-bench-") as tmp:
        folder = Path(tmp)
        keys = folder / "keys"
        keygen = [sys.executable, "-m", "bake", "keygen", "--out", str(keys / "ci")]
        no_passphrase = {**os.environ, "BAKE_KEY_PASSPHRASE": ""}
        subprocess.run(keygen, cwd=ROOT, check=True, capture_output=True, env=no_passphrase)
        recipes = folder / "recipes"
        recipes.mkdir()
        (recipes / "bench-base.yaml").write_text(BASE)
        common = {
            **os.environ,
            "BAKE_REGISTRY": f"dir:{folder / 'registry'}",
            "BAKE_SIGNING_KEY": str(keys / "ci.key"),
            "BAKE_TRUST": str(keys / "ci.pub"),
            "BAKE_KEY_PASSPHRASE": "",
        }
        with fresh_engines(2) as (first, second):
            (recipes / "bench-child.yaml").write_text(CHILD.format(marker="one"))
            state = folder / "runner-1"
            env = {**common, "DOCKER_HOST": first.host, "BAKE_STATE_DIR": str(state)}
            env["PACKER_TMP_DIR"] = str(state / "packer-tmp")
            baseline, _ = build(recipes / "bench-child.yaml", env)
            (recipes / "bench-child.yaml").write_text(CHILD.format(marker="two"))  # the change
            state = folder / "runner-2"
            env = {**common, "DOCKER_HOST": second.host, "BAKE_STATE_DIR": str(state)}
            env["PACKER_TMP_DIR"] = str(state / "packer-tmp")
            now, doc = build(recipes / "bench-child.yaml", env)
        parent = doc.get("parent")
        if not isinstance(parent, dict) or "published" not in parent:
            raise SystemExit(f"the second runner did not build on the published parent: {parent}")
    ratio = now / baseline
    result = {
        "baseline_parent_rebaked_s": round(baseline, 2),
        "fresh_runner_published_parent_s": round(now, 2),
        "ratio": round(ratio, 3),
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"baseline (fresh runner, parent bootstrapped and baked): {baseline:.1f} s")
        print(f"fresh runner, parent pulled from the registry:          {now:.1f} s")
        print(f"ratio {ratio:.3f} (goal <= {GOAL}): {'met' if ratio <= GOAL else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
