"""Bootable base disks without an image hub: mmdebstrap → ext4 (mkfs.ext4 -d) → qcow2.

The root filesystem is bootstrapped from the Debian mirror (as for containers) with what a
VM needs on top: a kernel, systemd as init, udev, OpenSSH, systemd-networkd with DHCP on
the virtio NIC and systemd-resolved. A few files make it boot fast and headless and let
bake in (written before the kernel is installed, so its initrd is built once, small):

- the initrd holds only the virtio and ext4 modules (MODULES=list);
- /etc/fstab mounts /dev/vda as / and grows it to the disk's size (x-systemd.growfs), so a
  derived recipe's larger disk_size is usable at once;
- SSH host keys are made on first boot, ed25519 and ECDSA only: RSA key generation takes
  20 s of an emulated CPU, and no key is shared by every instance of a golden image;
- root's authorized key comes from QEMU's fw_cfg (see bake/vm.py), read by a oneshot unit;
- apt's daily timers are off: a golden image is replaced, not upgraded in place, and a
  timer's apt run would race a bake's steps for the dpkg lock.

`mkfs.ext4 -d` copies a folder into a new filesystem image without loop devices or mounts.
Base disks are kept by a key over the bootstrap inputs and everything above, like the
container rootfs images are, so they are made once per change.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bake.attest.digest import sha256_file
from bake.errors import BakeError
from bake.infra.process import Call, Runner
from bake.recipe.models import Bootstrap
from bake.targets import bootstrap
from bake.targets.qemu.machine import FW_CFG_AUTHORIZED_KEYS, QEMU_IMG, BootFiles, size_bytes

FORMAT = "bake.vmbase/v1"
VM_PACKAGES = ("linux-image-amd64", "systemd-sysv", "udev", "openssh-server", "systemd-resolved")
ENABLE_UNITS = ("systemd-networkd.service", "bake-authorized-key.service")
DISABLE_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_reap.service")
INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4")
HOSTNAME = "debian"


@dataclass(frozen=True)
class GuestFile:
    path: str  # absolute, inside the guest
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class VmBase:
    boot: BootFiles
    key: str
    digest: str  # of the qcow2, for Packer's iso_checksum
    built: bool


_AUTHORIZE = (
    "modprobe -q qemu_fw_cfg || true; "
    f"f=/sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_AUTHORIZED_KEYS}/raw; "
    '[ -r "$f" ] || exit 0; '
    "umask 077; mkdir -p /root/.ssh; "
    'cat "$f" > /root/.ssh/authorized_keys'
)
_HOST_KEYS = (
    "for t in ed25519 ecdsa; do k=/etc/ssh/ssh_host_${t}_key; "
    '[ -s "$k" ] || ssh-keygen -q -t "$t" -N "" -f "$k"; done'
)


def _unit_escape(script: str) -> str:
    # systemd expands $VAR and ${VAR} in Exec lines itself; $$ is a literal $
    return script.replace("$", "$$")


def guest_files() -> tuple[GuestFile, ...]:
    return (
        GuestFile("/etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro,x-systemd.growfs 0 1\n"),
        GuestFile("/etc/hostname", f"{HOSTNAME}\n"),
        GuestFile("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost ip6-localhost\n"),
        GuestFile(
            "/etc/systemd/network/80-bake-dhcp.network",
            "# bake: DHCP on the (virtio) Ethernet NIC\n[Match]\nType=ether\n\n[Network]\nDHCP=yes\n",
        ),
        GuestFile("/etc/initramfs-tools/conf.d/bake-virtio.conf", "MODULES=list\n"),
        GuestFile("/usr/share/initramfs-tools/modules.d/bake-virtio", "\n".join(INITRD_MODULES) + "\n"),
        GuestFile(
            "/etc/ssh/sshd_config.d/bake-host-keys.conf",
            "# bake: host keys are made on first boot (see ssh.service.d)\n"
            "HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n",
        ),
        GuestFile(
            "/etc/systemd/system/ssh.service.d/bake-host-keys.conf",
            "# bake: this instance's own host keys, made on its first boot\n"
            "[Service]\nExecStartPre=\n"
            f"ExecStartPre=/bin/sh -c '{_unit_escape(_HOST_KEYS)}'\n"
            "ExecStartPre=/usr/sbin/sshd -t\n",
        ),
        GuestFile(
            "/etc/systemd/system/bake-authorized-key.service",
            "[Unit]\n"
            "Description=root's SSH key from QEMU fw_cfg (as systemd >= 254 does natively)\n"
            "DefaultDependencies=no\n"
            "After=local-fs.target\n"
            "Before=ssh.service\n\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"ExecStart=/bin/sh -c '{_unit_escape(_AUTHORIZE)}'\n\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n",
        ),
    )


def customize_command() -> str:
    """The last hook: enable/disable units offline, forget host keys and machine-id."""
    return (
        f'chroot "$1" systemctl enable --quiet {" ".join(ENABLE_UNITS)}'
        f' && chroot "$1" systemctl disable --quiet {" ".join(DISABLE_UNITS)}'
        ' && rm -f "$1"/etc/ssh/ssh_host_*'
        ' && : > "$1"/etc/machine-id'
        ' && rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
    )


def packages(spec: Bootstrap) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*VM_PACKAGES, *spec.include)))


def base_key(spec: Bootstrap, mirror: str, disk_size: str) -> str:
    """Changes when anything that shapes the base disk does."""
    doc = {
        "format": FORMAT,
        "packages": packages(spec),
        "files": [(f.path, f.content, f.mode) for f in guest_files()],
        "customize": customize_command(),
        "disk_size": disk_size,
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    purpose = "qemu:" + hashlib.sha256(blob).hexdigest()
    return bootstrap.bootstrap_key(spec, mirror, purpose)


def mmdebstrap_argv(spec: Bootstrap, mirror: str, overlay: Path, root: Path) -> tuple[str, ...]:
    bootstrap.check_inputs(spec, mirror, packages(spec))
    return (
        "mmdebstrap",
        "--quiet",
        f"--variant={spec.variant}",
        "--format=directory",
        '--aptopt=Acquire::Retries "3"',
        "--include=" + ",".join(packages(spec)),
        # before the kernel and OpenSSH are installed: the initrd and sshd see our config
        f"--essential-hook=sync-in {overlay} /",
        "--customize-hook=" + customize_command(),
        "--",
        spec.suite,
        str(root),
        mirror,
    )


def mkfs_argv(root: Path, raw: Path, disk_size: str) -> tuple[str, ...]:
    """An ext4 filesystem image of `root`'s content, `disk_size` big (sparse)."""
    size_k = size_bytes(disk_size) >> 10
    return ("mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), "--", str(raw), f"{size_k}k")


def convert_argv(raw: Path, qcow2: Path) -> tuple[str, ...]:
    return (QEMU_IMG, "convert", "-q", "-f", "raw", "-O", "qcow2", "--", str(raw), str(qcow2))


def boot_files(root: Path) -> tuple[Path, Path]:
    """The kernel and initrd that /vmlinuz and /initrd.img point at, inside `root`."""
    found = []
    for link in ("vmlinuz", "initrd.img"):
        path = root / link
        target = str(path.readlink()) if path.is_symlink() else link
        resolved = root / target.lstrip("/")
        if not resolved.is_file():
            raise BakeError(f"the bootstrapped system has no /{link} (looked for {resolved})")
        found.append(resolved)
    return found[0], found[1]


def write_overlay(files: Iterable[GuestFile], folder: Path) -> None:
    for f in files:
        path = folder / f.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.content, encoding="utf-8")
        path.chmod(f.mode)


def ensure_vm_base(
    runner: Runner,
    name: str,
    spec: Bootstrap,
    disk_size: str,
    cache: Path,
    *,
    mirror: str | None = None,
) -> VmBase:
    """The base disk for recipe `name` (built now or reused from `cache`)."""
    mirror = spec.mirror or mirror or bootstrap.pick_mirror(bootstrap.host_sources(), spec.suite)
    mirror = mirror.rstrip("/")
    key = base_key(spec, mirror, disk_size)
    final = cache / f"{name}-{key.removeprefix('sha256:')[:12]}"
    if (final / "base.json").is_file():
        doc = json.loads((final / "base.json").read_text(encoding="utf-8"))
        return VmBase(_boot(final), key, str(doc["digest"]), built=False)
    cache.mkdir(parents=True, exist_ok=True)
    # everything is made in a temporary folder beside the cache entry and renamed into place
    # when complete: an interrupted build leaves nothing that looks like a base
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
    try:
        overlay, root, raw = tmp / "overlay", tmp / "root", tmp / "disk.raw"
        write_overlay(guest_files(), overlay)
        runner(Call(argv=mmdebstrap_argv(spec, mirror, overlay, root), timeout=3600))
        kernel, initrd = boot_files(root)
        shutil.copyfile(kernel, tmp / "vmlinuz")
        shutil.copyfile(initrd, tmp / "initrd.img")
        runner(Call(argv=mkfs_argv(root, raw, disk_size), timeout=1800))
        shutil.rmtree(root)
        runner(Call(argv=convert_argv(raw, tmp / "disk.qcow2"), timeout=1800))
        raw.unlink()
        shutil.rmtree(overlay)
        digest = sha256_file(tmp / "disk.qcow2")
        doc = {"key": key, "digest": digest, "mirror": mirror, "suite": spec.suite, "disk_size": disk_size}
        (tmp / "base.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "base.json").is_file():
                raise
            # another bake made the same base meanwhile: use that one
            doc = json.loads((final / "base.json").read_text(encoding="utf-8"))
            return VmBase(_boot(final), key, str(doc["digest"]), built=False)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return VmBase(_boot(final), key, digest, built=True)


def _boot(folder: Path) -> BootFiles:
    return BootFiles(folder / "disk.qcow2", folder / "vmlinuz", folder / "initrd.img")
