"""Where a VM bake's time goes: base disk, boot, steps, shutdown, compaction, verification.

Bakes a recipe's qemu target for real (its parents first, as `bake_vm` does) and reports,
for every bake in the chain, the phases bake recorded (our monotonic clock at the arrival
of Packer's machine-readable events, and our own timings around everything else) beside
the same Packer phases computed from Packer's own whole-second event timestamps, as a
cross-check. With a fresh state folder (the default) the base disk is made too; with
--state DIR an earlier run's base disk and parents are reused, and only the recipe itself
is baked again (--force).

    python bench/vm_bench.py [--recipe recipes/web.yaml] [--state DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # so the bench runs from a checkout without installing

from bake.infra import packer, process  # noqa: E402  # needs the sys.path entry above
from bake.plan import plan_recipe  # noqa: E402
from bake.record import BuildRecord  # noqa: E402
from bake.targets import loop  # noqa: E402
from bake.targets.base import BakeContext, BakeOptions  # noqa: E402
from bake.targets.qemu import Qemu  # noqa: E402
from bake.targets.qemu import machine as vm  # noqa: E402
from bake.targets.qemu.session import QemuSession  # noqa: E402
from bake.ui.progress import PlainReporter  # noqa: E402

# (label, record timing key) in the order a bake runs them
PHASES = (
    ("base disk (mmdebstrap, mkfs.ext4 -d, qcow2)", "base_disk"),
    ("packer: copy + resize base", "packer_prepare"),
    ("packer: boot to SSH", "packer_boot"),
    ("packer: steps", "packer_steps"),
    ("packer: keep kernel+initrd, clean up", "packer_collect"),
    ("packer: shutdown", "packer_shutdown"),
    ("packer: compaction (qemu-img convert -c)", "packer_compaction"),
    ("verify: boot to SSH + systemd up", "verify_boot"),
    ("verify: file manifest over SSH (for drift)", "verify_manifest"),
    ("verify: checks + power off", "verify_checks"),
    ("digest (sha256 of disk, kernel, initrd)", "digest"),
)


class EventLog(PlainReporter):
    """A reporter that also keeps Packer's events, per bake (bake_vm labels each one)."""

    def __init__(self) -> None:
        super().__init__(verbose=False)
        self.events: dict[str, list[packer.Event]] = {}

    def packer_event(self, event: packer.Event) -> None:
        self.events.setdefault(self.label.strip().rstrip(":"), []).append(event)
        super().packer_event(event)


def phases(rec: BuildRecord) -> dict[str, float]:
    t = dict(rec.timings)
    if "verify" in t:
        t["verify_checks"] = t["verify"] - t.get("verify_boot", 0.0) - t.get("verify_manifest", 0.0)
    return {key: round(t[key], 1) for _label, key in PHASES if key in t}


def run(recipe: Path, state: Path, accelerator: str | None) -> dict[str, Any]:
    info = packer.detect(process.run)
    (plan,) = plan_recipe(recipe, info, targets=["qemu"])
    log = EventLog()
    env = dict(os.environ)
    env.setdefault("PACKER_TMP_DIR", str(state / "packer-tmp"))
    ctx = BakeContext(process.run, state, log, env)
    t0 = time.monotonic()
    with process.terminate_as_interrupt():
        out = loop.bake(Qemu(accelerator), QemuSession(ctx, accelerator), ctx, plan, BakeOptions(force=True))
    wall = time.monotonic() - t0
    bakes = []
    for rec in (*out.parents, out.record):
        events = log.events.get(rec.name, [])
        from_packer = vm.packer_phases((float(ev.timestamp), ev) for ev in events)
        bakes.append(
            {
                "name": rec.name,
                "baked": bool(events),  # a reused parent ran no Packer here
                "phases": phases(rec),
                "packer_timestamps": {f"packer_{k}": v for k, v in from_packer.items()},
                "total": round(rec.timings.get("total", 0.0), 1),
                "packer": round(rec.timings.get("packer", 0.0), 1),
                # baseline: `packer build` alone, timed in this same bake; bake adds the
                # booted verification, the digests and its bookkeeping on top
                "ratio_to_packer": round(
                    (rec.timings.get("total", 0.0) - rec.timings.get("base_disk", 0.0))
                    / max(rec.timings.get("packer", 0.0), 1e-9),
                    2,
                ),
                "artifact_size": rec.artifact.files["disk"].size,
                "accelerator": rec.artifact.meta.get("accelerator"),
                "verify": {k: rec.verify.get(k) for k in ("method", "passed", "failed")},
            }
        )
    return {"recipe": str(recipe), "state": str(state), "wall": round(wall, 1), "bakes": bakes}


def human(doc: dict[str, Any]) -> str:
    lines = [f"{doc['recipe']}: {doc['wall']:.0f}s wall (state {doc['state']})"]
    for b in doc["bakes"]:
        head = f"\n{b['name']} ({b['accelerator']}"
        head += f", disk {b['artifact_size'] / 2**20:.0f} MiB" if b["artifact_size"] else ""
        v = b["verify"]
        head += f", verify {v['passed']} passed/{v['failed']} failed via {v['method']})"
        lines.append(head if b["baked"] else head + " - reused, timings from its record")
        lines.append(f"  {'phase':<44} {'seconds':>8} {'packer ts':>10} {'share':>6}")
        total = b["total"] or 1.0
        for label, key in PHASES:
            if key not in b["phases"]:
                continue
            secs = b["phases"][key]
            ts = b["packer_timestamps"].get(key)
            ts_text = f"{ts:10.0f}" if ts is not None else " " * 10
            lines.append(f"  {label:<44} {secs:8.1f} {ts_text} {secs / total:6.0%}")
        lines.append(f"  {'total':<44} {b['total']:8.1f}")
        if b["packer"]:
            lines.append(
                f"  ratio to `packer build` alone ({b['packer']:.1f}s, same run, base disk excluded): "
                f"{b['ratio_to_packer']:.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "debian-base.yaml")
    ap.add_argument("--state", type=Path, help="state folder to reuse (default: a fresh one, deleted after)")
    ap.add_argument("--accelerator", choices=("kvm", "tcg"), help="skip detection")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    state = args.state or Path(tempfile.mkdtemp(prefix="bake-vm-bench-"))
    try:
        doc = run(args.recipe.resolve(), state.resolve(), args.accelerator)
    finally:
        if args.state is None:
            shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(doc, indent=2) if args.json else human(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
