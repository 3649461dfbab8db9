"""Booted verification, with the VM played by a real (harmless) process and a fake sshd.

The orchestration is what matters here: the overlay, key and process are gone afterwards
whatever happened, and pytest is pointed at the VM through the generated ssh_config.
"""

from __future__ import annotations

import base64
import re
import shlex
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bake.attest.sbom import EVIDENCE_SCRIPT
from bake.errors import VerifyError
from bake.infra import process
from bake.infra.process import Call, Result, Spawned
from bake.recipe.models import Check
from bake.targets.qemu import machine as vm
from bake.targets.qemu import verify as vmverify

CHECKS = (
    Check.model_validate({"file": {"path": "/etc/bake-release"}}),
    Check.model_validate({"command": {"run": "true"}}),
)


class FakeSshd:
    """Answers every connection on 127.0.0.1:port with an SSH banner."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-fake\r\n")

    def close(self) -> None:
        self.sock.close()


class FakeVm:
    """A spawner (the VM is `sleep`, its sshd a FakeSshd) and a runner (qemu-img, ssh, pytest)."""

    def __init__(self, boots: bool = True, failing: tuple[str, ...] = ()) -> None:
        self.boots, self.failing = boots, failing
        self.spawned: list[Spawned] = []
        self.qemu: list[Call] = []
        self.servers: list[FakeSshd] = []
        self.calls: list[Call] = []

    def spawn(self, call: Call, log: Path) -> Spawned:
        self.qemu.append(call)
        fwd = next(a for a in call.argv if "hostfwd=" in a)
        port = int(re.search(r"127\.0\.0\.1:(\d+)-", fwd)[1])  # type: ignore[index]  # always there
        console = Path(call.argv[call.argv.index("-serial") + 1].removeprefix("file:"))
        if self.boots:
            self.servers.append(FakeSshd(port))
            proc = process.spawn(Call(argv=("sleep", "300")), log)
        else:
            console.write_text("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
            proc = process.spawn(Call(argv=("false",)), log)
        self.spawned.append(proc)
        return proc

    def run(self, call: Call, on_line: object = None) -> Result:
        self.calls.append(call)
        argv = call.argv
        if argv[0] == "qemu-img":
            Path(argv[-1]).write_bytes(b"overlay")
        elif argv[0] == "ssh" and "is-system-running" in argv:
            return Result(argv, 0, "running\n", "", 0.1)
        elif argv[0] == "ssh" and argv[-2:] == vmverify.DPKG_STATUS:
            return Result(argv, 0, "Package: nginx-light\nStatus: install ok installed\n", "", 0.1)
        elif argv[0] == "ssh" and argv[-1] == "sh -c " + shlex.quote(EVIDENCE_SCRIPT):
            release = base64.b64encode(b"ID=debian\nVERSION_ID=12\n").decode()
            return Result(argv, 0, f"os-release {release}\n", "", 0.1)
        elif argv[0] == "ssh" and "poweroff" in argv:
            self.spawned[-1].stop(timeout=5)  # the guest powers off: QEMU exits
        elif argv[1:3] == ("-m", "pytest"):
            self._pytest(call)
        return Result(argv, 0, "", "", 0.1)

    def _pytest(self, call: Call) -> None:
        module = Path(call.argv[-1])
        junit = Path(next(a for a in call.argv if a.startswith("--junitxml=")).split("=", 1)[1])
        cases = []
        for name in re.findall(r"^def (test_\w+)\(host\):", module.read_text(), re.MULTILINE):
            body = '<failure message="nope">nope</failure>' if name in self.failing else ""
            cases.append(f'<testcase classname="test_verify" name="{name}[ssh://bake-vm]">{body}</testcase>')
        junit.write_text(f"<testsuites><testsuite>{''.join(cases)}</testsuite></testsuites>")

    def close(self) -> None:
        for s in self.servers:
            s.close()
        for p in self.spawned:
            p.stop(timeout=5)


@pytest.fixture
def fake() -> Iterator[FakeVm]:
    f = FakeVm()
    yield f
    f.close()


def _boot(tmp_path: Path) -> vm.BootFiles:
    for name in ("web.qcow2", "vmlinuz", "initrd.img"):
        (tmp_path / name).write_bytes(b"x")
    return vm.BootFiles(tmp_path / "web.qcow2", tmp_path / "vmlinuz", tmp_path / "initrd.img")


def _pytest_call(fake: FakeVm) -> Call:
    return next(c for c in fake.calls if c.argv[1:3] == ("-m", "pytest"))


def test_verify_boots_an_overlay_runs_testinfra_over_ssh_and_leaves_nothing(
    tmp_path: Path, fake: FakeVm
) -> None:
    boot = _boot(tmp_path)
    out = vmverify.verify_vm_disk(fake.run, fake.spawn, boot, vm.Machine(), "web", CHECKS, tmp_path / "v")
    assert out.report.ok and out.report.method == "booted-vm"
    assert [r.outcome for r in out.report.results] == ["passed", "passed"]
    assert out.system_state == "running" and "system running" in out.report.instance
    assert out.dpkg_status is not None and "Package: nginx-light" in out.dpkg_status  # for the SBOM
    assert out.os is not None and out.os.os_release == "ID=debian\nVERSION_ID=12\n"  # its distro
    # the overlay is backed by the final disk, and the VM booted the overlay, not the disk
    overlay_call = next(c for c in fake.calls if c.argv[0] == "qemu-img")
    overlay = tmp_path / "v" / "vm" / "overlay.qcow2"
    assert overlay_call.argv == vm.overlay_argv(boot.disk.resolve(), overlay)
    qemu = fake.qemu[0].argv
    assert qemu[0] == "qemu-system-x86_64"
    assert qemu[qemu.index("-drive") + 1].startswith(f"file={overlay},")
    assert qemu[qemu.index("-kernel") + 1] == str(boot.kernel)
    pytest_call = _pytest_call(fake)
    assert "--hosts=ssh://bake-vm" in pytest_call.argv
    config = Path(next(a for a in pytest_call.argv if a.startswith("--ssh-config=")).split("=", 1)[1])
    assert pytest_call.argv[-1].endswith("test_verify.py")
    # afterwards: QEMU stopped, overlay and key gone, the shared SSH connection closed
    assert not fake.spawned[0].alive()
    assert not (tmp_path / "v" / "vm" / "overlay.qcow2").exists()
    assert not config.parent.exists()
    assert any(c.argv[-4:] == ("-O", "exit", "--", "bake-vm") for c in fake.calls)
    assert any(c.argv[-3:] == ("systemctl", "poweroff", "--no-block") for c in fake.calls)
    assert boot.disk.read_bytes() == b"x"


def test_a_failing_check_is_reported_not_raised(tmp_path: Path) -> None:
    fake = FakeVm(failing=("test_02_command_true",))
    try:
        out = vmverify.verify_vm_disk(
            fake.run, fake.spawn, _boot(tmp_path), vm.Machine(), "web", CHECKS, tmp_path
        )
    finally:
        fake.close()
    assert not out.report.ok
    assert [r.title for r in out.report.failed] == ["command true"]


def test_a_disk_that_does_not_boot_fails_with_its_console_and_cleans_up(tmp_path: Path) -> None:
    fake = FakeVm(boots=False)
    try:
        with pytest.raises(VerifyError) as info:
            vmverify.verify_vm_disk(
                fake.run, fake.spawn, _boot(tmp_path), vm.Machine(), "web", CHECKS, tmp_path / "v"
            )
    finally:
        fake.close()
    assert "stopped before SSH answered" in info.value.message
    assert "Unable to mount root fs" in info.value.message
    assert not (tmp_path / "v" / "vm" / "overlay.qcow2").exists()
    assert not any(c.argv[1:3] == ("-m", "pytest") for c in fake.calls)


def test_ssh_banner_tells_sshd_from_a_bare_port() -> None:
    port = vmverify.free_port()
    assert not vmverify.ssh_banner(port, timeout=0.5)  # nothing listens
    server = FakeSshd(port)
    try:
        assert vmverify.ssh_banner(port)
    finally:
        server.close()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        assert not vmverify.ssh_banner(silent.getsockname()[1], timeout=0.5)
    finally:
        silent.close()


def test_the_file_manifest_is_taken_over_ssh_before_the_checks_run(tmp_path: Path, fake: FakeVm) -> None:
    import contextlib
    import io

    from tests.unit.attest.test_filemanifest import FIND_OUTPUT

    streamed: list[Call] = []

    @contextlib.contextmanager
    def streamer(call: Call) -> Iterator[io.BytesIO]:
        streamed.append(call)
        assert not any(c.argv[1:3] == ("-m", "pytest") for c in fake.calls), "checks ran first"
        yield io.BytesIO(FIND_OUTPUT)

    boot = _boot(tmp_path)
    out = vmverify.verify_vm_disk(
        fake.run, fake.spawn, boot, vm.Machine(), "web", CHECKS, tmp_path / "v",
        volatile=("/srv/cache",), streamer=streamer,
    )  # fmt: skip
    assert out.files is not None and [e.path for e in out.files][:2] == ["/bin", "/etc"]
    (call,) = streamed
    assert call.argv[:5] == ("ssh", "-F", call.argv[2], "--", vm.SSH_ALIAS)
    command = call.argv[-1]
    assert command.startswith("env LC_ALL=C find / -xdev")
    for path in ("/srv/cache", "/etc/machine-id", "/etc/ssh/ssh_host_ed25519_key", "/proc"):
        assert path in command  # pruned: each instance has its own
