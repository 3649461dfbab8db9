"""The VM bake's pure parts: template and variables, records, reuse, failure messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bake.compile.template import compile_plan
from bake.errors import BakeError, RecipeError, ToolError
from bake.infra.packer import Event, PackerInfo
from bake.plan import Plan, plan_recipe
from bake.record import BuildRecord, save
from bake.targets import loop
from bake.targets.base import Artifact, ArtifactFile, BakeContext, BakeOptions, Outcome
from bake.targets.qemu import Qemu
from bake.targets.qemu import machine as vm
from bake.targets.qemu.session import QemuBase, QemuSession, final_files, image_dir, packer_variables
from bake.ui.progress import PlainReporter
from tests.conftest import RECIPES

INFO = PackerInfo((1, 6, 6))


def _plan(name: str, target: str = "qemu", folder: Path = RECIPES) -> Plan:
    (p,) = plan_recipe(folder / f"{name}.yaml", INFO, targets=[target])
    return p


def _template(name: str) -> str:
    return compile_plan(_plan(name)).files[f"{name}.pkr.hcl"].decode()


def _base() -> QemuBase:
    boot = vm.BootFiles(Path("/b/disk.qcow2"), Path("/b/vmlinuz"), Path("/b/initrd.img"))
    return QemuBase(
        {"name": "debian-base-vmbase"},
        boot=boot,
        checksum="sha256:" + "a" * 64,
        machine=vm.Machine(accelerator="tcg"),
    )


def test_every_variable_bake_passes_is_declared_by_the_template(tmp_path: Path) -> None:
    declared = set(re.findall(r'^variable "(\w+)"', _template("web"), re.MULTILINE))
    variables = packer_variables(_base(), tmp_path, tmp_path / "ssh", tmp_path / "output")
    assert set(variables) <= declared  # Packer refuses an undeclared -var
    assert variables["kernel_cmdline"] == vm.KERNEL_CMDLINE
    assert variables["base_disk_checksum"].startswith("sha256:")
    assert variables["output_directory"] == str(tmp_path / "output")


def test_template_boots_the_kernel_and_hands_the_key_through_fw_cfg() -> None:
    text = _template("web")
    assert '["-kernel", var.kernel]' in text and '["-initrd", var.initrd]' in text
    assert '["-append", var.kernel_cmdline]' in text
    assert f"name={vm.FW_CFG_AUTHORIZED_KEYS},file=${{var.authorized_keys_file}}" in text
    assert '["-cpu", var.accelerator == "kvm" ? "host" : "qemu64"]' in text
    assert "ssh_private_key_file = var.ssh_private_key_file" in text
    assert 'disk_discard         = "unmap"' in text and "disk_compression     = true" in text
    assert f'default = "{vm.KERNEL_CMDLINE}"' in text  # the template's default agrees with bake


def test_template_keeps_kernel_and_initrd_then_cleans_up_after_the_steps() -> None:
    text = _template("web")
    last_step = text.index("scripts/07-shell.sh")
    download = text.index('source      = "/vmlinuz"')
    cleanup = text.index(": > /etc/machine-id")
    assert last_step < download < text.index('source      = "/initrd.img"') < cleanup
    assert 'direction   = "download"' in text and "fstrim" in text[cleanup:]
    assert text[download:].count("max_retries = 2") == 3  # a dropped SSH connection is retried


def test_key_and_host_keys_are_removed_only_by_the_shutdown_command() -> None:
    # a retried provisioner reconnects: the key and host keys must still be there until then
    text = _template("web")
    shutdown = next(line for line in text.splitlines() if "shutdown_command" in line)
    assert "rm -f /root/.ssh/authorized_keys /etc/ssh/ssh_host_*_key" in shutdown
    assert shutdown.rstrip().endswith('&& systemctl poweroff"')
    assert text.count("authorized_keys /etc/ssh") == 1


def test_template_disk_size_is_the_recipes() -> None:
    assert 'disk_size            = "3G"' in _template("web")
    assert 'disk_size            = "2G"' in _template("debian-base")


def _boot_files(folder: Path) -> vm.BootFiles:
    folder.mkdir(parents=True, exist_ok=True)
    boot = final_files(folder, "web")
    for p, data in ((boot.disk, b"disk"), (boot.kernel, b"kernel"), (boot.initrd, b"initrd")):
        p.write_bytes(data)
    return boot


def _artifact(boot: vm.BootFiles) -> Artifact:
    files = {
        "disk": ArtifactFile(boot.disk, "sha256:d", boot.disk.stat().st_size),
        "kernel": ArtifactFile(boot.kernel, "sha256:k", boot.kernel.stat().st_size),
        "initrd": ArtifactFile(boot.initrd, "sha256:i", boot.initrd.stat().st_size),
    }
    return Artifact(
        "qcow2", str(boot.disk), "sha256:d", files, {"accelerator": "tcg", "cmdline": boot.cmdline}
    )


def test_artifact_names_disk_kernel_initrd_and_how_to_boot(tmp_path: Path) -> None:
    boot = _boot_files(tmp_path)
    doc = Qemu().artifact_to_json(_artifact(boot))
    assert doc["type"] == "qcow2" and doc["path"] == str(boot.disk) and doc["digest"] == "sha256:d"
    assert doc["size"] == 4
    assert doc["kernel"] == {"path": str(boot.kernel), "digest": "sha256:k", "size": 6}
    assert doc["initrd"]["digest"] == "sha256:i"
    assert doc["cmdline"] == vm.KERNEL_CMDLINE and doc["boot"] == "direct-kernel"
    assert doc["accelerator"] == "tcg"
    assert Qemu().artifact_from_json(doc) == _artifact(boot)  # a record reads back as written


def _ctx(state: Path) -> BakeContext:
    def no_runner(call: object, on_line: object = None) -> object:
        raise AssertionError(f"nothing should run: {call}")

    return BakeContext(runner=no_runner, state=state, reporter=PlainReporter(), environ={})  # type: ignore[arg-type]  # never called


def bake_vm(ctx: BakeContext, plan: Plan) -> Outcome:
    return loop.bake(Qemu(), QemuSession(ctx), ctx, plan, BakeOptions())


def _good(plan: Plan, boot: vm.BootFiles) -> BuildRecord:
    return BuildRecord(
        status="good",
        name=plan.name,
        version=plan.version,
        target="qemu",
        bake_key=plan.key,
        recipe_path="r",
        packer_version="1.6.6",
        created="2024-01-01T00:00:00Z",
        artifact=_artifact(boot),
    )


def test_a_good_record_is_reused_while_its_files_are_there(tmp_path: Path) -> None:
    plan = _plan("web")
    boot = _boot_files(image_dir(tmp_path, plan))
    save(tmp_path, _good(plan, boot))
    ctx = _ctx(tmp_path)
    session = QemuSession(ctx)
    art = _good(plan, boot).artifact
    assert session.present(art)
    out = bake_vm(ctx, plan)  # nothing runs: the parent is not even looked at
    assert out.cached and out.record.artifact.files["disk"].path == boot.disk
    boot.disk.write_bytes(b"changed size")  # not the recorded disk any more
    assert not session.present(art)
    boot.disk.write_bytes(b"disk")
    boot.initrd.unlink()
    assert not session.present(art)


def test_bake_vm_refuses_other_targets_and_non_root_logins(tmp_path: Path) -> None:
    with pytest.raises(BakeError, match="a docker plan cannot be baked by the qemu target"):
        bake_vm(_ctx(tmp_path), _plan("web", "docker"))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "odd.yaml").write_text(
        "name: odd\nversion: 0.0.1\nbase: {bootstrap: {distro: debian, suite: bookworm}}\n"
        "targets: {qemu: {ssh_username: admin}}\nsteps: []\n"
    )
    with pytest.raises(BakeError, match="ssh_username must be root"):
        bake_vm(_ctx(tmp_path), _plan("odd", folder=tmp_path / "r"))


def test_a_child_disk_smaller_than_its_parents_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "debian-base.yaml").write_text((RECIPES / "debian-base.yaml").read_text())
    (tmp_path / "small.yaml").write_text(
        "name: small\nversion: 0.0.1\nextends: debian-base\ntargets: {qemu: {disk_size: 1G}}\nsteps: []\n"
    )
    with pytest.raises(RecipeError, match="disk_size 1G is smaller than its parent debian-base's 2G"):
        bake_vm(_ctx(tmp_path / "state"), _plan("small", folder=tmp_path))


def _ui(kind: str, text: str) -> Event:
    return Event(0, "", "ui", (kind, text))


def test_packer_failure_names_the_step_and_strips_packers_prefix(tmp_path: Path) -> None:
    events = [
        _ui("say", "==> web.qemu.web: Connected to SSH!"),
        _ui("say", "==> web.qemu.web: Provisioning with shell script: /w/template/scripts/01-packages.sh"),
        _ui("say", "==> web.qemu.web: Provisioning with shell script: /w/template/scripts/02-user.sh"),
        _ui("message", "    web.qemu.web: useradd: UID 1001 is not unique"),
        _ui("error", "Build 'web.qemu.web' errored: Script exited with non-zero exit status: 4"),
    ]
    err = loop.packer_failure(_plan("web"), events, ToolError("packer exited 1"), tmp_path / "console.log")
    assert "packer build of web 1.4.0 (qemu) failed at step 2 of 7 (site owner)" in err.message
    assert "  | useradd: UID 1001 is not unique" in err.message
    assert "web.qemu.web:" not in err.message.split("\n", 1)[1].split("errored")[0]
    assert "console" not in err.message  # it got to SSH: the console is not the story


def test_packer_failure_before_ssh_shows_the_console(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("[ 2.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    events = [
        _ui("say", "==> web.qemu.web: Starting VM, booting disk image"),
        _ui("error", "Build 'web.qemu.web' errored: Timeout waiting for SSH."),
    ]
    err = loop.packer_failure(_plan("web"), events, ToolError("packer exited 1"), console)
    assert "Timeout waiting for SSH." in err.message
    assert "the build VM's console:" in err.message and "Unable to mount root fs" in err.message
