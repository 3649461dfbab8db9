"""Base disks: what goes into the guest, the argv that makes it, and the cache around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bake.errors import ToolError
from bake.infra.process import Call, Result
from bake.recipe.models import Bootstrap
from bake.targets.qemu import basedisk as vmbase

SPEC = Bootstrap(distro="debian", suite="bookworm", variant="minbase", include=("ca-certificates",))
MIRROR = "http://deb.debian.org/debian"


def _files() -> dict[str, vmbase.GuestFile]:
    return {f.path: f for f in vmbase.guest_files()}


def test_the_root_filesystem_is_the_whole_virtio_disk_and_grows_with_it() -> None:
    fstab = _files()["/etc/fstab"].content
    assert fstab.split()[:3] == ["/dev/vda", "/", "ext4"]
    assert "x-systemd.growfs" in fstab


def test_initrd_holds_only_what_boots_a_virtio_ext4_disk() -> None:
    files = _files()
    assert files["/etc/initramfs-tools/conf.d/bake-virtio.conf"].content == "MODULES=list\n"
    modules = files["/usr/share/initramfs-tools/modules.d/bake-virtio"].content.split()
    assert set(modules) == {"virtio_pci", "virtio_blk", "virtio_net", "ext4"}


def test_dhcp_on_ethernet_with_networkd() -> None:
    network = _files()["/etc/systemd/network/80-bake-dhcp.network"].content
    assert "Type=ether" in network and "DHCP=yes" in network
    assert "systemd-networkd.service" in vmbase.ENABLE_UNITS


def test_root_key_comes_from_fw_cfg_before_sshd_starts() -> None:
    unit = _files()["/etc/systemd/system/bake-authorized-key.service"].content
    assert "Before=ssh.service" in unit and "WantedBy=multi-user.target" in unit
    assert "opt/io.systemd.credentials/ssh.authorized_keys.root" in unit
    assert "bake-authorized-key.service" in vmbase.ENABLE_UNITS


def test_shell_in_units_escapes_dollars_for_systemd() -> None:
    # systemd expands $VAR / ${VAR} in Exec lines itself; the shell must see them instead
    for path in (
        "/etc/systemd/system/bake-authorized-key.service",
        "/etc/systemd/system/ssh.service.d/bake-host-keys.conf",
    ):
        for line in _files()[path].content.splitlines():
            if line.startswith("Exec"):
                assert line.replace("$$", "").count("$") == 0, line


def test_host_keys_are_made_on_first_boot_without_rsa() -> None:
    dropin = _files()["/etc/systemd/system/ssh.service.d/bake-host-keys.conf"].content
    assert "ExecStartPre=\n" in dropin  # reset: keys first, then sshd -t
    assert dropin.index("ssh-keygen") < dropin.index("sshd -t")
    assert "rsa" not in dropin
    config = _files()["/etc/ssh/sshd_config.d/bake-host-keys.conf"].content
    assert "ssh_host_ed25519_key" in config and "rsa" not in config
    assert 'rm -f "$1"/etc/ssh/ssh_host_*' in vmbase.customize_command()


def test_apt_timers_are_off_in_golden_images() -> None:
    assert {"apt-daily.timer", "apt-daily-upgrade.timer"} <= set(vmbase.DISABLE_UNITS)


def test_packages_add_what_a_vm_needs_once() -> None:
    spec = Bootstrap(distro="debian", suite="bookworm", include=("openssh-server", "curl"))
    pkgs = vmbase.packages(spec)
    assert pkgs[: len(vmbase.VM_PACKAGES)] == vmbase.VM_PACKAGES
    assert pkgs.count("openssh-server") == 1 and "curl" in pkgs
    assert "linux-image-amd64" in pkgs and "systemd-sysv" in pkgs


def test_base_key_follows_every_input() -> None:
    key = vmbase.base_key(SPEC, MIRROR, "2G")
    assert key == vmbase.base_key(SPEC, MIRROR, "2G")
    assert key != vmbase.base_key(SPEC, MIRROR, "3G")
    assert key != vmbase.base_key(SPEC, "http://other/debian", "2G")
    other = Bootstrap(distro="debian", suite="bookworm", variant="minbase", include=("curl",))
    assert key != vmbase.base_key(other, MIRROR, "2G")


def test_mmdebstrap_argv_writes_the_config_before_the_kernel_is_installed() -> None:
    argv = vmbase.mmdebstrap_argv(SPEC, MIRROR, Path("/w/overlay"), Path("/w/root"))
    assert argv[0] == "mmdebstrap" and "--format=directory" in argv and "--variant=minbase" in argv
    assert "--essential-hook=sync-in /w/overlay /" in argv
    assert any(a.startswith("--customize-hook=chroot") for a in argv)
    include = next(a for a in argv if a.startswith("--include=")).removeprefix("--include=").split(",")
    assert "linux-image-amd64" in include and "ca-certificates" in include
    assert argv[-3:] == ("bookworm", "/w/root", MIRROR)


def test_mkfs_makes_a_sparse_ext4_image_from_a_folder() -> None:
    assert vmbase.mkfs_argv(Path("/w/root"), Path("/w/disk.raw"), "2G") == (
        "mkfs.ext4",
        "-q",
        "-F",
        "-L",
        "root",
        "-d",
        "/w/root",
        "--",
        "/w/disk.raw",
        f"{2 << 20}k",
    )
    convert = vmbase.convert_argv(Path("a.raw"), Path("b.qcow2"))
    assert convert[-5:] == ("-O", "qcow2", "--", "a.raw", "b.qcow2")


def _fake_root(root: Path) -> None:
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-6.1.0-1-amd64").write_bytes(b"kernel")
    (root / "boot" / "initrd.img-6.1.0-1-amd64").write_bytes(b"initrd")
    (root / "vmlinuz").symlink_to("boot/vmlinuz-6.1.0-1-amd64")
    (root / "initrd.img").symlink_to("boot/initrd.img-6.1.0-1-amd64")


def test_boot_files_follow_the_symlinks_inside_the_root(tmp_path: Path) -> None:
    _fake_root(tmp_path)
    kernel, initrd = vmbase.boot_files(tmp_path)
    assert kernel == tmp_path / "boot" / "vmlinuz-6.1.0-1-amd64"
    assert initrd.read_bytes() == b"initrd"


def test_write_overlay_sets_modes(tmp_path: Path) -> None:
    vmbase.write_overlay([vmbase.GuestFile("/etc/x/y.conf", "hi\n", 0o600)], tmp_path)
    path = tmp_path / "etc" / "x" / "y.conf"
    assert path.read_text() == "hi\n" and path.stat().st_mode & 0o777 == 0o600


class FakeTools:
    """Plays mmdebstrap, mkfs.ext4 and qemu-img by creating what they would create."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail

    def __call__(self, call: Call, on_line: object = None) -> Result:
        self.calls.append(call.argv)
        tool = call.argv[0]
        if tool == self.fail:
            raise ToolError(f"{tool} exited 1")
        if tool == "mmdebstrap":
            overlay = Path(next(a for a in call.argv if a.startswith("--essential-hook=")).split()[1])
            assert (overlay / "etc" / "fstab").is_file()
            _fake_root(Path(call.argv[-2]))
        elif tool == "mkfs.ext4":
            Path(call.argv[-2]).write_bytes(b"raw")
        elif tool == "qemu-img":
            Path(call.argv[-1]).write_bytes(b"qcow2")
        return Result(call.argv, 0, "", "", 0.0)


def test_ensure_vm_base_builds_once_then_reuses(tmp_path: Path) -> None:
    tools = FakeTools()
    base = vmbase.ensure_vm_base(tools, "debian-base", SPEC, "2G", tmp_path, mirror=MIRROR)
    assert base.built and [c[0] for c in tools.calls] == ["mmdebstrap", "mkfs.ext4", "qemu-img"]
    folder = base.boot.disk.parent
    assert sorted(p.name for p in folder.iterdir()) == ["base.json", "disk.qcow2", "initrd.img", "vmlinuz"]
    assert base.boot.kernel.read_bytes() == b"kernel"
    assert json.loads((folder / "base.json").read_text())["digest"] == base.digest
    assert base.digest.startswith("sha256:")
    again = vmbase.ensure_vm_base(tools, "debian-base", SPEC, "2G", tmp_path, mirror=MIRROR)
    assert not again.built and again.boot == base.boot and again.digest == base.digest
    assert len(tools.calls) == 3


@pytest.mark.parametrize("tool", ["mmdebstrap", "mkfs.ext4", "qemu-img"])
def test_a_failed_base_leaves_nothing_behind(tmp_path: Path, tool: str) -> None:
    with pytest.raises(ToolError):
        vmbase.ensure_vm_base(FakeTools(fail=tool), "debian-base", SPEC, "2G", tmp_path, mirror=MIRROR)
    assert list(tmp_path.iterdir()) == []
