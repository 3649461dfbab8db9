"""Verify a final qcow2 by booting it: a throwaway VM, testinfra over SSH, then nothing left.

Never the build VM: a copy-on-write overlay backed by the final disk boots with the
artifact's own kernel, initrd and command line, user-mode networking and SSH forwarded to
a free 127.0.0.1 port; a throwaway key reaches it through fw_cfg. When SSH answers and
systemd has finished booting, the recipe's checks run with pytest + testinfra's ssh
backend. Whatever happens (a failed check, a boot that never answers, SIGTERM), the VM is
powered off (stopped, if it does not go by itself) and the overlay, key and SSH control
socket are deleted.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from bake.attest.filemanifest import TIMEOUT, Entry, Streamer, find_command, find_entries, volatile_set
from bake.attest.sbom import EVIDENCE_SCRIPT, OsEvidence, parse_evidence
from bake.errors import VerifyError
from bake.infra import process
from bake.infra.process import Call, Interrupted, Runner, Spawned
from bake.recipe.models import Check
from bake.targets.qemu import machine as vm
from bake.verify.run import VerifyReport, run_module, write_module

VERIFY_CPUS = min(2, os.cpu_count() or 1)  # checks and the file manifest side by side

BOOT_TIMEOUT = {"kvm": 180.0, "tcg": 900.0}
POWEROFF_WAIT = 30.0
PORT_ATTEMPTS = 3
METHOD = "booted-vm"
# made or changed by every instance as it boots and runs: its own host keys, machine-id,
# the key it was given, systemd's state (random seed, timers), what daily timers keep and
# fsck's lost+found
VM_VOLATILE = (
    "/etc/machine-id",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/root/.ssh",
    "/var/lib/systemd",
    "/var/lib/dhcp",
    "/var/lib/private",
    "/var/lib/logrotate",  # daily timers: logrotate's state, dpkg's database backups
    "/var/backups",
    "/lost+found",
)
DPKG_STATUS = ("cat", "/var/lib/dpkg/status")

Spawner = Callable[[Call, Path], Spawned]


@dataclass(frozen=True)
class BootedVm:
    port: int
    config: Path  # an ssh_config that names the VM vm.SSH_ALIAS
    console_log: Path
    boot_seconds: float
    system_state: str  # `systemctl is-system-running`: running, degraded, …


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ssh_banner(port: int, timeout: float = 3.0) -> bool:
    """True once sshd answers. QEMU's user network accepts on the forwarded port even while
    nothing listens in the guest, so only the banner tells that sshd is up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


@contextlib.contextmanager
def boot_vm(
    runner: Runner,
    spawn: Spawner,
    boot: vm.BootFiles,
    machine: vm.Machine,
    folder: Path,
    *,
    label: str = "bake-verify",
) -> Iterator[BootedVm]:
    """A running throwaway VM of `boot.disk` (never written: an overlay takes the writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    # short: the SSH control socket's path must fit in a unix socket address (108 bytes)
    ssh_dir = Path(tempfile.mkdtemp(prefix="bake-ssh-"))
    overlay = folder / "overlay.qcow2"
    console = folder / "console.log"
    procs: list[Spawned] = []  # registered as soon as started: stopped whatever happens next
    config = ssh_dir / "ssh_config"
    graceful = False  # power off through SSH only once it answered, and not when interrupted
    try:
        keys = vm.generate_keypair(label)
        identity = ssh_dir / "id_ed25519"
        identity.touch(mode=0o600)
        identity.write_bytes(keys.private_openssh)
        (ssh_dir / "authorized_keys").write_text(keys.public_openssh + "\n", encoding="utf-8")
        runner(Call(argv=vm.overlay_argv(boot.disk.resolve(), overlay)))
        disk = vm.BootFiles(overlay, boot.kernel, boot.initrd, boot.cmdline)
        started = time.monotonic()
        proc, port = _start(spawn, disk, machine, ssh_dir / "authorized_keys", console, folder, label, procs)
        config.write_text(vm.ssh_config(port, identity, ssh_dir), encoding="utf-8")
        timeout = BOOT_TIMEOUT.get(machine.accelerator, BOOT_TIMEOUT["tcg"])
        _wait_for_ssh(runner, proc, port, config, console, started + timeout)
        graceful = True
        state = _wait_for_boot(runner, config, started + timeout)
        yield BootedVm(port, config, console, time.monotonic() - started, state)
    except Interrupted:
        graceful = False
        raise
    finally:
        for started_proc in procs:
            _power_off(runner, started_proc, config, graceful=graceful)
        overlay.unlink(missing_ok=True)
        shutil.rmtree(ssh_dir, ignore_errors=True)


def _start(
    spawn: Spawner,
    disk: vm.BootFiles,
    machine: vm.Machine,
    authorized_keys: Path,
    console: Path,
    folder: Path,
    label: str,
    procs: list[Spawned],
) -> tuple[Spawned, int]:
    """Start QEMU on a free port; another process may take the port first, so retry."""
    log = folder / "qemu.log"
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        log.unlink(missing_ok=True)
        argv = vm.qemu_argv(
            disk, machine, ssh_port=port, authorized_keys=authorized_keys, console_log=console, name=label
        )
        proc = spawn(Call(argv=argv), log)
        procs.append(proc)
        time.sleep(0.5)
        if proc.alive() or "host forwarding" not in _text(log):
            return proc, port
        proc.stop()
    raise VerifyError(f"QEMU could not forward a port for SSH:\n{vm.tail(_text(log))}")


def _wait_for_ssh(
    runner: Runner, proc: Spawned, port: int, config: Path, console: Path, deadline: float
) -> None:
    start = time.monotonic()
    while time.monotonic() < deadline:
        if not proc.alive():
            code = proc.stop()
            raise VerifyError(
                f"the verify VM stopped before SSH answered (QEMU exit {code}); console:\n"
                + vm.tail(_text(console)),
                "the disk, kernel or initrd does not boot; the console log is above",
            )
        if ssh_banner(port):
            result = runner(Call(argv=vm.ssh_argv(config, "true"), check=False, timeout=60))
            if result.returncode == 0:
                return
        time.sleep(1.0)
    raise VerifyError(
        f"the verify VM did not answer on SSH in {time.monotonic() - start:.0f}s; console:\n"
        + vm.tail(_text(console)),
        "the image must start sshd at boot (the base disk enables it)",
    )


def _wait_for_boot(runner: Runner, config: Path, deadline: float) -> str:
    """Wait until systemd has started everything (checks see the system as deployed)."""
    timeout = max(30.0, deadline - time.monotonic())
    argv = vm.ssh_argv(config, "systemctl", "is-system-running", "--wait")
    result = runner(Call(argv=argv, check=False, timeout=timeout))
    return result.stdout.strip() or "unknown"


def _power_off(runner: Runner, proc: Spawned, config: Path, *, graceful: bool) -> None:
    """Power the VM off (the overlay is thrown away either way, so a stop is as good when
    we are interrupted or it never answered), and end the shared SSH connection."""
    if graceful and proc.alive():
        with contextlib.suppress(Exception):
            poweroff = vm.ssh_argv(config, "systemctl", "poweroff", "--no-block")
            runner(Call(argv=poweroff, check=False, timeout=15))
    if config.is_file():
        with contextlib.suppress(Exception):  # local: asks the control socket, if any, to exit
            runner(Call(argv=vm.ssh_stop_master_argv(config), check=False, timeout=10))
    end = time.monotonic() + (POWEROFF_WAIT if graceful else 0.0)
    while proc.alive() and time.monotonic() < end:
        time.sleep(0.5)
    proc.stop(timeout=10)


@dataclass(frozen=True)
class VmVerification:
    report: VerifyReport
    boot_seconds: float  # QEMU start → SSH answers and systemd has finished booting
    system_state: str
    dpkg_status: str | None = None  # /var/lib/dpkg/status of the verified instance
    os: OsEvidence | None = None  # its /etc/os-release and machine-readable copyright files
    files: tuple[Entry, ...] | None = None  # its file manifest, taken before the checks ran
    manifest_seconds: float = 0.0


def _timed(fn: Callable[[], tuple[Entry, ...]]) -> tuple[tuple[Entry, ...], float]:
    t0 = time.monotonic()
    return fn(), time.monotonic() - t0


def collect_manifest(streamer: Streamer, config: Path, volatile: frozenset[str]) -> tuple[Entry, ...]:
    """The file manifest of a booted VM: the one find | sha256sum pipeline `bake drift`
    runs over SSH, so a live instance is later compared with exactly this."""
    with streamer(Call(argv=vm.ssh_argv(config, find_command(volatile)), timeout=TIMEOUT)) as out:
        return tuple(sorted(find_entries(out), key=lambda e: e.path))


def verify_vm_disk(
    runner: Runner,
    spawn: Spawner,
    boot: vm.BootFiles,
    machine: vm.Machine,
    recipe: str,
    checks: Sequence[Check],
    folder: Path,
    *,
    volatile: Sequence[str] | None = None,
    streamer: Streamer = process.stream,
) -> VmVerification:
    """Boot a fresh VM of `boot.disk`, run the checks with testinfra over SSH, tear it down.

    With `volatile` (the recipe's own), the file manifest of the fresh instance is taken
    while the checks run (what they may write is volatile: logs, /run, /tmp; a check that
    writes elsewhere shows in it): what `bake drift` compares live VMs with. The VM gets
    at least VERIFY_CPUS vCPUs, so the two run side by side (under TCG, a host thread each)."""
    start = time.monotonic()
    module, tests = write_module(recipe, checks, folder)
    entries: tuple[Entry, ...] | None = None
    manifest_seconds = 0.0
    verifier = replace(machine, cpus=max(machine.cpus, VERIFY_CPUS))
    with (
        boot_vm(runner, spawn, boot, verifier, folder / "vm", label=f"bake-verify-{recipe}") as booted,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        manifest = None
        if volatile is not None:  # taken while the checks run: two SSH sessions, two vCPUs
            vol = volatile_set((*VM_VOLATILE, *volatile))
            manifest = pool.submit(_timed, lambda: collect_manifest(streamer, booted.config, vol))
        ssh_config = (f"--ssh-config={booted.config}",)
        results = run_module(runner, {}, vm.testinfra_hosts(), module, tests, ssh_config) if checks else []
        if manifest is not None:
            entries, manifest_seconds = manifest.result()
        instance = f"qemu ssh://root@127.0.0.1:{booted.port} (system {booted.system_state})"
        # the installed packages, for the SBOM a publish attests (read from the instance
        # that was verified: the final disk itself is never mounted)
        status = runner(Call(argv=vm.ssh_argv(booted.config, *DPKG_STATUS), check=False, timeout=120))
        dpkg = status.stdout if status.returncode == 0 and status.stdout.strip() else None
        script = vm.ssh_argv(booted.config, "sh -c " + shlex.quote(EVIDENCE_SCRIPT))
        found = runner(Call(argv=script, check=False, timeout=300))
        os_found = parse_evidence(found.stdout) if found.returncode == 0 else None
    ok = not checks or (bool(results) and all(r.outcome in ("passed", "skipped") for r in results))
    report = VerifyReport(
        ok=ok,
        results=tuple(results),
        junit=str(module.parent / "junit.xml"),
        instance=instance,
        method=METHOD,
        seconds=time.monotonic() - start,
    )
    return VmVerification(
        report, booted.boot_seconds, booted.system_state, dpkg, os_found, entries, manifest_seconds
    )
