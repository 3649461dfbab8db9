"""The pure VM toolkit: sizes, QEMU argv, keys, ssh_config, Packer phases."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bake.errors import RecipeError
from bake.infra.packer import Event
from bake.targets.qemu import machine as vm

BOOT = vm.BootFiles(Path("/s/web.qcow2"), Path("/s/vmlinuz"), Path("/s/initrd.img"))


@pytest.mark.parametrize(("text", "size"), [("2G", 2 << 30), ("512M", 512 << 20), ("10G", 10 << 30)])
def test_size_bytes(text: str, size: int) -> None:
    assert vm.size_bytes(text) == size


def test_size_bytes_refuses_what_is_not_a_size() -> None:
    with pytest.raises(RecipeError, match="not a number followed by M or G"):
        vm.size_bytes("2T")


def test_a_derived_disk_may_grow_but_not_shrink() -> None:
    vm.check_disk_sizes("web", "3G", "debian-base", "2G")
    vm.check_disk_sizes("web", "2048M", "debian-base", "2G")
    with pytest.raises(RecipeError) as info:
        vm.check_disk_sizes("web", "1G", "debian-base", "2G")
    assert "web: targets.qemu.disk_size 1G is smaller than its parent debian-base's 2G" in info.value.message
    assert info.value.hint is not None and "2G or more" in info.value.hint


def test_qemu_argv_boots_the_kernel_with_ssh_forwarded_and_the_key_in_fw_cfg() -> None:
    argv = vm.qemu_argv(
        BOOT,
        vm.Machine(memory=768, cpus=2, accelerator="tcg"),
        ssh_port=40022,
        authorized_keys=Path("/k/a,b.pub"),
        console_log=Path("/w/console.log"),
        name="bake-verify-web",
    )
    assert argv[0] == "qemu-system-x86_64"

    def after(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert after("-machine") == "pc,accel=tcg" and after("-cpu") == "qemu64"
    assert after("-m") == "768" and after("-smp") == "2"
    assert after("-kernel") == "/s/vmlinuz" and after("-initrd") == "/s/initrd.img"
    assert after("-append") == vm.KERNEL_CMDLINE
    assert after("-drive").startswith("file=/s/web.qcow2,if=virtio,format=qcow2")
    assert after("-netdev") == "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22"
    assert after("-serial") == "file:/w/console.log"
    # commas inside an option value are doubled, or QEMU would split the path
    assert after("-fw_cfg") == f"name={vm.FW_CFG_AUTHORIZED_KEYS},file=/k/a,,b.pub"
    assert "-no-reboot" in argv and after("-display") == "none"


def test_kvm_runs_the_host_cpu() -> None:
    argv = vm.qemu_argv(
        BOOT,
        vm.Machine(accelerator="kvm"),
        ssh_port=1,
        authorized_keys=Path("k"),
        console_log=Path("c"),
    )
    assert argv[argv.index("-machine") + 1] == "pc,accel=kvm"
    assert argv[argv.index("-cpu") + 1] == "host"


def test_root_and_cmdline_agree_with_the_disk_layout() -> None:
    # one unpartitioned ext4 filesystem on the virtio disk, booted to multi-user
    assert "root=/dev/vda" in vm.KERNEL_CMDLINE and "console=ttyS0" in vm.KERNEL_CMDLINE
    assert "systemd.unit=multi-user.target" in vm.KERNEL_CMDLINE


def test_overlay_is_backed_by_the_final_disk() -> None:
    assert vm.overlay_argv(Path("/i/web.qcow2"), Path("/w/o.qcow2")) == (
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/i/web.qcow2",
        "-F",
        "qcow2",
        "--",
        "/w/o.qcow2",
    )


def test_kvm_probe_boots_a_kernel_without_root_so_it_panics() -> None:
    argv = vm.kvm_probe_argv(Path("/b/vmlinuz"), Path("/t/c.log"))
    assert "pc,accel=kvm" in argv and "-no-reboot" in argv
    assert "panic=-1" in argv[argv.index("-append") + 1]
    assert vm.kvm_probe_booted("[ 1.2] Kernel panic - not syncing: VFS: Unable to mount root fs")
    assert not vm.kvm_probe_booted("")


def test_keypair_is_a_fresh_ed25519_pair_in_openssh_format() -> None:
    a = vm.generate_keypair("bake-web-123")
    b = vm.generate_keypair("bake-web-123")
    assert a.public_openssh.startswith("ssh-ed25519 AAAA") and a.public_openssh.endswith(" bake-web-123")
    assert a.public_openssh != b.public_openssh
    key = serialization.load_ssh_private_key(a.private_openssh, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert a.public_openssh.split()[:2] == public.decode().split()
    assert a.private_openssh.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


def test_ssh_config_trusts_no_host_key_and_shares_one_connection() -> None:
    text = vm.ssh_config(40022, Path("/tmp/bake-ssh-x/id_ed25519"), Path("/tmp/bake-ssh-x"))
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "Host bake-vm"
    for expected in (
        "HostName 127.0.0.1",
        "Port 40022",
        "User root",
        "IdentityFile /tmp/bake-ssh-x/id_ed25519",
        "IdentitiesOnly yes",
        "BatchMode yes",
        "StrictHostKeyChecking no",
        "UserKnownHostsFile /dev/null",
        "ControlMaster auto",
        "ControlPath /tmp/bake-ssh-x/%C",
    ):
        assert expected in lines
    assert vm.ssh_argv(Path("/c"), "true") == ("ssh", "-F", "/c", "--", "bake-vm", "true")
    assert vm.ssh_stop_master_argv(Path("/c")) == ("ssh", "-F", "/c", "-O", "exit", "--", "bake-vm")
    assert vm.testinfra_hosts() == "ssh://bake-vm"


def _say(text: str) -> Event:
    return Event(0, "", "ui", ("say", text))


def test_packer_phases_from_ui_markers() -> None:
    events = [
        (0.0, _say("==> web.qemu.web: Retrieving ISO")),
        (2.0, _say("==> web.qemu.web: Starting VM, booting disk image")),
        (3.0, _say("==> web.qemu.web: Waiting for SSH to become available...")),
        (50.0, _say("==> web.qemu.web: Connected to SSH!")),
        (51.0, _say("==> web.qemu.web: Provisioning with shell script: /w/scripts/01-packages.sh")),
        (200.0, _say("==> web.qemu.web: Downloading /vmlinuz => /w/output/vmlinuz")),
        (205.0, _say("==> web.qemu.web: Gracefully halting virtual machine...")),
        (210.0, _say("==> web.qemu.web: Converting hard drive...")),
        (240.0, Event(0, "web.qemu.web", "artifact", ("0", "end"))),
    ]
    assert vm.packer_phases(events) == {
        "prepare": 2.0,
        "boot": 48.0,
        "steps": 150.0,
        "collect": 5.0,
        "shutdown": 5.0,
        "compaction": 30.0,
    }


def test_packer_phases_of_a_build_that_failed_early() -> None:
    events = [(0.0, _say("Retrieving ISO")), (1.0, _say("Starting VM")), (9.0, _say("Build errored"))]
    assert vm.packer_phases(events) == {"prepare": 1.0, "boot": 8.0}
    assert vm.packer_phases([]) == {}


def test_tail() -> None:
    assert vm.tail("a\n\nb\nc\n", 2) == "  | b\n  | c"
