"""QEMU machines for the qemu target (pure): boot settings, argv, SSH keys and config, phases.

How a bake VM boots. The disk is an *unpartitioned* ext4 filesystem (`/dev/vda`) with no
bootloader; QEMU boots it by direct kernel boot (`-kernel`, `-initrd`, `-append`) with the
kernel and initrd kept beside the disk as part of the artifact. A partitioned disk with
GRUB needs loop devices and mounts (root, and leftovers to clean up after a SIGTERM);
`mkfs.ext4 -d` builds the filesystem from a folder with neither, and skipping firmware
bootloader menus saves seconds on every boot under emulation.

How the build and verify VMs get in. No key is ever written into a disk: each VM gets a
throwaway ed25519 public key through QEMU's fw_cfg, under the name systemd (>= 254) reads
credentials from, `opt/io.systemd.credentials/ssh.authorized_keys.root`. Debian 12's
systemd 252 does not read it yet, so the base disk carries a small unit that does the same
(see bake/vmbase.py). The bake removes the key and the SSH host keys before the final
shutdown, so every instance of a golden image gets its own host keys on first boot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bake.errors import RecipeError
from bake.infra.packer import Event

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
# What a deployer passes to boot the disk; the build and verify VMs boot with exactly this.
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 quiet systemd.unit=multi-user.target"
FW_CFG_AUTHORIZED_KEYS = "opt/io.systemd.credentials/ssh.authorized_keys.root"
MACHINE_TYPE = "pc"  # Packer's default for the build VM; verify boots the same hardware
SSH_ALIAS = "bake-vm"

_SIZE_RE = re.compile(r"^(\d+)([MG])$")


@dataclass(frozen=True)
class BootFiles:
    """A bootable disk and the kernel and initrd it boots with."""

    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str = KERNEL_CMDLINE


@dataclass(frozen=True)
class Machine:
    memory: int = 1024  # MiB
    cpus: int = 1
    accelerator: str = "tcg"  # kvm | tcg


@dataclass(frozen=True)
class SshKeyPair:
    private_openssh: bytes  # OpenSSH PEM, unencrypted: a throwaway for one VM
    public_openssh: str  # "ssh-ed25519 AAAA… comment"


def size_bytes(text: str) -> int:
    """`2G` / `512M` (the recipe's disk_size) in bytes."""
    m = _SIZE_RE.match(text)
    if m is None:
        raise RecipeError(f"disk size {text!r} is not a number followed by M or G", "e.g. 3G")
    return int(m[1]) << (30 if m[2] == "G" else 20)


def check_disk_sizes(child: str, child_size: str, parent: str, parent_size: str) -> None:
    """A derived disk can grow its parent's, never shrink it (qemu-img refuses, late)."""
    if size_bytes(child_size) < size_bytes(parent_size):
        raise RecipeError(
            f"{child}: targets.qemu.disk_size {child_size} is smaller than its parent "
            f"{parent}'s {parent_size}",
            f"set disk_size to {parent_size} or more (a disk grows, it cannot shrink)",
        )


def qemu_opt(value: str) -> str:
    """A value inside a QEMU `-opt key=value,…` list: commas are doubled."""
    return value.replace(",", ",,")


def cpu_model(accelerator: str) -> str:
    # qemu64 under emulation: TCG emulates "max" (AVX, …) at a cost and the guest then
    # uses it; boots measured 30% slower here. KVM passes the host CPU through.
    return "host" if accelerator == "kvm" else "qemu64"


def generate_keypair(comment: str) -> SshKeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return SshKeyPair(private, f"{public.decode()} {comment}".strip())


def qemu_argv(
    boot: BootFiles,
    machine: Machine,
    *,
    ssh_port: int,
    authorized_keys: Path,
    console_log: Path,
    name: str = "bake-verify",
    binary: str = QEMU,
) -> tuple[str, ...]:
    """A headless VM with user-mode networking and SSH forwarded to 127.0.0.1:ssh_port.

    `-no-reboot` makes a guest reboot or panic end QEMU, so a broken boot shows as an exit.
    """
    return (
        binary,
        "-name",
        qemu_opt(name),
        "-machine",
        f"{MACHINE_TYPE},accel={machine.accelerator}",
        "-cpu",
        cpu_model(machine.accelerator),
        "-m",
        str(machine.memory),
        "-smp",
        str(machine.cpus),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{console_log}",
        "-kernel",
        str(boot.kernel),
        "-initrd",
        str(boot.initrd),
        "-append",
        boot.cmdline,
        "-drive",
        f"file={qemu_opt(str(boot.disk))},if=virtio,format=qcow2,cache=unsafe",
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-fw_cfg",
        f"name={FW_CFG_AUTHORIZED_KEYS},file={qemu_opt(str(authorized_keys))}",
    )


def overlay_argv(backing: Path, overlay: Path) -> tuple[str, ...]:
    """A copy-on-write disk over `backing`: the final disk is never written by verification."""
    return (QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", "qcow2", "--", str(overlay))


def kvm_probe_argv(kernel: Path, console_log: Path, binary: str = QEMU) -> tuple[str, ...]:
    """Boot `kernel` under KVM with no root filesystem: it panics at once, and QEMU exits.

    Opening /dev/kvm and even running firmware can work where booting a kernel hangs (as on
    this project's CI machine), so only a kernel that gets as far as its panic proves KVM.
    """
    return (
        binary,
        "-machine",
        f"{MACHINE_TYPE},accel=kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{console_log}",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1 root=/dev/bake-kvm-probe",
    )


def kvm_probe_booted(console: str) -> bool:
    return "Kernel panic" in console or "VFS: Unable to mount root" in console


def ssh_config(port: int, identity: Path, control_dir: Path, alias: str = SSH_ALIAS) -> str:
    """An ssh_config for a throwaway VM: its host keys are new on every boot, so none is
    pinned; the connection is shared (ControlMaster) because each testinfra check is an
    ssh command, and a handshake costs a second of an emulated CPU."""
    return (
        f"Host {alias}\n"
        "  HostName 127.0.0.1\n"
        f"  Port {port}\n"
        "  User root\n"
        f"  IdentityFile {identity}\n"
        "  IdentitiesOnly yes\n"
        "  IdentityAgent none\n"
        "  BatchMode yes\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
        "  ConnectTimeout 10\n"
        "  ServerAliveInterval 5\n"
        "  ServerAliveCountMax 6\n"
        "  ControlMaster auto\n"
        f"  ControlPath {control_dir}/%C\n"
        "  ControlPersist 120\n"
    )


def ssh_argv(config: Path, *command: str, alias: str = SSH_ALIAS) -> tuple[str, ...]:
    return ("ssh", "-F", str(config), "--", alias, *command)


def ssh_stop_master_argv(config: Path, alias: str = SSH_ALIAS) -> tuple[str, ...]:
    return ("ssh", "-F", str(config), "-O", "exit", "--", alias)


def testinfra_hosts(alias: str = SSH_ALIAS) -> str:
    return f"ssh://{alias}"


# --- phases of a Packer qemu build, from its machine-readable UI lines --------------------

# (phase that starts, marker in Packer's `ui say` text); order is the order Packer runs them
PHASE_MARKERS = (
    ("prepare", "Retrieving ISO"),
    ("boot", "Starting VM"),
    ("steps", "Connected to SSH"),
    ("collect", "Downloading /vmlinuz"),
    ("shutdown", "Gracefully halting"),
    ("compaction", "Converting hard drive"),
)


def packer_phases(events: Iterable[tuple[float, Event]]) -> dict[str, float]:
    """Seconds per phase: each phase runs from its marker to the next seen marker (or the
    last event). `events` pairs each event with when it arrived (our monotonic clock is
    finer than Packer's whole-second timestamps)."""
    marks: list[tuple[str, float]] = []
    last = None
    for when, ev in events:
        last = when
        if ev.type != "ui":
            continue
        for phase, marker in PHASE_MARKERS:
            if marker in ev.message and phase not in (m[0] for m in marks):
                marks.append((phase, when))
    if last is None:
        return {}
    out: dict[str, float] = {}
    for i, (phase, start) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else last
        out[phase] = max(0.0, end - start)
    return out


def tail(text: str, lines: int = 25) -> str:
    kept = [x for x in text.splitlines() if x.strip()][-lines:]
    return "\n".join("  | " + x for x in kept)
