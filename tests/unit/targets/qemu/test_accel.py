"""KVM detection: a kernel must boot as far as its panic, or it is TCG; the answer is cached."""

from __future__ import annotations

import json
from pathlib import Path

from bake.errors import ToolError
from bake.infra.process import Call, Result
from bake.targets.qemu import accel as vmaccel


class Qemu:
    """Plays the probe's QEMU: writes `console` to its serial log, exits `rc` (or times out)."""

    def __init__(self, console: str = "", rc: int = 0, hang: bool = False) -> None:
        self.console, self.rc, self.hang = console, rc, hang
        self.calls: list[Call] = []

    def __call__(self, call: Call, on_line: object = None) -> Result:
        self.calls.append(call)
        log = call.argv[call.argv.index("-serial") + 1].removeprefix("file:")
        Path(log).write_text(self.console)
        if self.hang:
            raise ToolError(f"qemu-system-x86_64 timed out after {call.timeout:.0f}s")
        return Result(call.argv, self.rc, "", "", 1.0)


def _dev(tmp_path: Path) -> Path:
    dev = tmp_path / "kvm"
    dev.write_text("")
    return dev


def test_no_usable_dev_kvm_is_tcg_without_running_anything(tmp_path: Path) -> None:
    qemu = Qemu("Kernel panic")
    assert vmaccel.probe(qemu, tmp_path / "vmlinuz", device=tmp_path / "missing") == "tcg"
    assert qemu.calls == []


def test_a_kernel_that_panics_under_kvm_means_kvm(tmp_path: Path) -> None:
    qemu = Qemu("[ 0.9] Kernel panic - not syncing: VFS: Unable to mount root fs")
    assert vmaccel.probe(qemu, tmp_path / "vmlinuz", device=_dev(tmp_path)) == "kvm"
    assert qemu.calls[0].timeout == vmaccel.PROBE_TIMEOUT and not qemu.calls[0].check


def test_kvm_that_hangs_on_a_kernel_or_aborts_means_tcg(tmp_path: Path) -> None:
    dev = _dev(tmp_path)
    assert vmaccel.probe(Qemu(hang=True), tmp_path / "vmlinuz", device=dev) == "tcg"
    assert vmaccel.probe(Qemu("", rc=134), tmp_path / "vmlinuz", device=dev) == "tcg"
    assert vmaccel.probe(Qemu("SeaBIOS", rc=0), tmp_path / "vmlinuz", device=dev) == "tcg"


def test_the_answer_is_cached_until_something_changes(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    dev = _dev(tmp_path)
    cache = tmp_path / "state" / "vm-accelerator.json"
    assert vmaccel.detect(Qemu(hang=True), kernel, cache, dev) == "tcg"
    assert json.loads(cache.read_text())["accelerator"] == "tcg"
    again = Qemu("Kernel panic")
    assert vmaccel.detect(again, kernel, cache, dev) == "tcg" and again.calls == []
    kernel.write_bytes(b"another kernel")  # the stamp changed: probed again
    assert vmaccel.detect(again, kernel, cache, dev) == "kvm" and len(again.calls) == 1


def test_a_configured_accelerator_wins(tmp_path: Path) -> None:
    qemu = Qemu(hang=True)
    assert vmaccel.choose("kvm", qemu, tmp_path / "k", tmp_path / "c.json") == "kvm"
    assert vmaccel.choose("tcg", qemu, tmp_path / "k", tmp_path / "c.json") == "tcg"
    assert qemu.calls == []
