"""KVM where it works, TCG (software emulation) elsewhere: detected once, remembered.

`/dev/kvm` must open read-write, and then a real kernel must boot under KVM as far as its
panic for want of a root filesystem (a second or two). Some hosts (nested virtualisation
without the CPU features a guest kernel needs, like this project's CI machine) create VMs
and run firmware but hang on a kernel, so the probe has a timeout and failing it means TCG.
The answer is cached per QEMU binary, kernel and /dev/kvm, since the probe costs up to the
timeout on such hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from bake.errors import ToolError
from bake.infra.fsutil import write_cache
from bake.infra.process import Call, Runner
from bake.targets.qemu.machine import QEMU, kvm_probe_argv, kvm_probe_booted

PROBE_TIMEOUT = 20.0
KVM_DEVICE = Path("/dev/kvm")


def kvm_usable(device: Path = KVM_DEVICE) -> bool:
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def probe(runner: Runner, kernel: Path, timeout: float = PROBE_TIMEOUT, device: Path = KVM_DEVICE) -> str:
    """`kvm` if a kernel boots under KVM here, else `tcg`."""
    if not kvm_usable(device):
        return "tcg"
    with tempfile.TemporaryDirectory(prefix="bake-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        try:
            result = runner(Call(argv=kvm_probe_argv(kernel, log), timeout=timeout, check=False))
        except ToolError:  # the timeout: KVM hangs on a kernel here
            return "tcg"
        console = log.read_text(errors="replace") if log.is_file() else ""
    return "kvm" if result.returncode == 0 and kvm_probe_booted(console) else "tcg"


def _stamp(kernel: Path, device: Path) -> str:
    parts = []
    for p in (Path(shutil.which(QEMU) or QEMU), device, kernel):
        try:
            st = p.stat()
            parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}:{st.st_rdev}")
        except OSError:
            parts.append(f"{p}:missing")
    return "|".join(parts)


def detect(runner: Runner, kernel: Path, cache: Path, device: Path = KVM_DEVICE) -> str:
    """`probe`, remembered in `cache` (a JSON file) while nothing it depends on changes."""
    stamp = _stamp(kernel, device)
    try:
        doc = json.loads(cache.read_text(encoding="utf-8"))
        if doc.get("stamp") == stamp and doc.get("accelerator") in ("kvm", "tcg"):
            return str(doc["accelerator"])
    except (OSError, ValueError):
        pass
    found = probe(runner, kernel, device=device)
    write_cache(cache, {"stamp": stamp, "accelerator": found})
    return found


def choose(configured: str, runner: Runner, kernel: Path, cache: Path) -> str:
    """The recipe's `accelerator` (auto | kvm | tcg) as what to run with."""
    if configured in ("kvm", "tcg"):
        return configured
    return detect(runner, kernel, cache)
