"""The qemu target at bake time: base disks, Packer's VM, booted verification.

A derived recipe builds on its parent's final qcow2; a base recipe on a bootstrapped base
disk (:mod:`bake.targets.qemu.basedisk`). Packer boots the base with the parent's kernel
and this bake's throwaway key, runs the steps over SSH, keeps the kernel and initrd beside
the disk, shuts down and compacts. The final disk is then booted again, fresh, and
verified (:mod:`bake.targets.qemu.verify`). Only a verified disk moves to the image
folder; a failed bake's disk is deleted.

Everything temporary (keys, overlays, Packer's output on failure, QEMU processes) is gone
when a bake returns or raises, SIGTERM included: Packer gets SIGINT and kills its VM, and
our own cleanup runs in `finally` blocks while SIGTERM is raised as an exception.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bake.attest.digest import canonical_json, sha256_file
from bake.attest.filemanifest import manifest_predicate, volatile_set
from bake.errors import BakeError, ToolError
from bake.infra.fsutil import replace_dir
from bake.plan import Plan
from bake.registry.backend import Registry
from bake.registry.disks import DiskFile
from bake.targets.base import (
    Artifact,
    ArtifactFile,
    BakeContext,
    BakeOptions,
    Base,
    Built,
    Evidence,
    PackerInputs,
    Published,
    Stored,
    TimedEvents,
    Verification,
)
from bake.targets.qemu import KIND, ROLES, config
from bake.targets.qemu import accel as vmaccel
from bake.targets.qemu import basedisk as vmbase
from bake.targets.qemu.machine import BootFiles, Machine, generate_keypair, packer_phases
from bake.targets.qemu.verify import VM_VOLATILE, verify_vm_disk

DPKG_STATUS_FILE = "dpkg-status"  # beside the disk: what the verified instance had installed
FILE_MANIFEST_FILE = "files.json"  # beside the disk: the verified instance's file manifest
OS_RELEASE_FILE = "os-release"  # beside the disk: the verified instance's /etc/os-release
COPYRIGHTS_FILE = "copyrights.json"  # beside the disk: its machine-readable copyright files


@dataclass(frozen=True)
class QemuBase(Base):
    boot: BootFiles = field(default_factory=lambda: BootFiles(Path(), Path(), Path()))
    checksum: str = ""  # of the base disk, for Packer's iso_checksum
    machine: Machine = field(default_factory=Machine)


@dataclass(frozen=True)
class QemuBuilt(Built):
    boot: BootFiles = field(default_factory=lambda: BootFiles(Path(), Path(), Path()))
    machine: Machine = field(default_factory=Machine)
    output: Path | None = None  # Packer's output folder, deleted unless kept


def _mine(built: Built) -> QemuBuilt:
    if not isinstance(built, QemuBuilt):
        raise TypeError(f"not a qemu bake: {built!r}")
    return built


def image_dir(state: Path, plan: Plan) -> Path:
    """Where a verified bake's disk, kernel and initrd are kept."""
    return state / "images" / "qemu" / plan.name / plan.short_key


def final_files(folder: Path, name: str) -> BootFiles:
    return BootFiles(folder / f"{name}.qcow2", folder / "vmlinuz", folder / "initrd.img")


def packer_variables(base: QemuBase, work: Path, ssh_dir: Path, output: Path) -> dict[str, str]:
    """Absolute paths throughout: Packer runs in `work` and QEMU wherever Packer says."""
    return {
        "base_disk": str(base.boot.disk.absolute()),
        "base_disk_checksum": base.checksum,
        "kernel": str(base.boot.kernel.absolute()),
        "initrd": str(base.boot.initrd.absolute()),
        "kernel_cmdline": base.boot.cmdline,
        "accelerator": base.machine.accelerator,
        "output_directory": str(output.absolute()),
        "ssh_private_key_file": str((ssh_dir / "id_ed25519").absolute()),
        "authorized_keys_file": str((ssh_dir / "authorized_keys").absolute()),
        "console_log": str((work / "console.log").absolute()),
    }


def boot_files_beside(disk: Path) -> BootFiles:
    """The kernel and initrd of a disk given by path: `NAME.vmlinuz`/`NAME.initrd.img`
    (as `bake fetch` writes them) or `vmlinuz`/`initrd.img` (as a bake keeps them)."""
    stem = disk.name.removesuffix(".qcow2")
    for kernel, initrd in ((f"{stem}.vmlinuz", f"{stem}.initrd.img"), ("vmlinuz", "initrd.img")):
        if (disk.parent / kernel).is_file() and (disk.parent / initrd).is_file():
            return BootFiles(disk, disk.parent / kernel, disk.parent / initrd)
    raise BakeError(
        f"no kernel and initrd beside {disk}",
        f"put {stem}.vmlinuz and {stem}.initrd.img beside it (`bake fetch -o {disk.name}` does)",
    )


class QemuSession:
    def __init__(self, ctx: BakeContext, accelerator: str | None = None) -> None:
        self.ctx = ctx
        self.accelerator = accelerator

    def _machine(self, plan: Plan, kernel: Path) -> Machine:
        conf = config(plan)
        configured = self.accelerator or conf.accelerator
        cache = self.ctx.state / "vm-accelerator.json"
        accelerator = vmaccel.choose(configured, self.ctx.runner, kernel, cache)
        return Machine(memory=conf.memory, cpus=conf.cpus, accelerator=accelerator)

    # --- before Packer ------------------------------------------------------------------

    def present(self, artifact: Artifact) -> bool:
        """The recorded disk (of its recorded size), kernel and initrd are still there."""
        for role in ROLES:
            f = artifact.files.get(role)
            if f is None or not f.path.is_file():
                return False
        disk = artifact.files["disk"]
        return disk.path.stat().st_size == disk.size

    def fetch(self, plan: Plan, published: Published) -> Artifact:
        """Download a published VM image (disk, kernel, initrd) by digest into the state
        folder, every byte checked against its signed digest; kept there by digest, so a
        later bake on this machine does not download it again."""
        from bake.registry import disks

        missing = [r for r in ROLES if r not in published.files]
        if missing:
            raise BakeError(f"{plan.name} {published.version} in {published.registry} has no {missing[0]}")
        folder = self.ctx.state / "published" / f"{plan.name}-{published.digest.removeprefix('sha256:')[:16]}"
        names = {"disk": f"{plan.name}.qcow2", "kernel": "vmlinuz", "initrd": "initrd.img"}
        dests = {role: folder / names[role] for role in ROLES}
        have = all(dests[r].is_file() and sha256_file(dests[r]) == published.files[r] for r in ROLES)
        if not have:
            folder.mkdir(parents=True, exist_ok=True)
            self.ctx.reporter.phase(
                f"{plan.name}: fetch", f"{published.version} by digest {published.digest[:19]}"
            )
            disks.fetch(
                published.registry, published.ref, dict(published.files), dests, environ=self.ctx.environ
            )
        files = {
            role: ArtifactFile(dests[role], published.files[role], dests[role].stat().st_size)
            for role in ROLES
        }
        return self._artifact(dests["disk"], files, {"published": published.version})

    def base(self, plan: Plan, parent: Artifact | None, opts: BakeOptions) -> Base:
        """The disk to build on: the parent's final disk, or a bootstrapped base disk."""
        if plan.parent is not None and parent is not None:
            files = parent.files
            boot = BootFiles(files["disk"].path, files["kernel"].path, files["initrd"].path)
            record = {
                "name": plan.parent.name,
                "version": plan.parent.version,
                "bake_key": plan.parent.key,
                "digest": str(parent.digest),
            }
            if "published" in parent.meta:
                record["published"] = str(parent.meta["published"])
            return QemuBase(
                record, boot=boot, checksum=str(parent.digest), machine=self._machine(plan, boot.kernel)
            )
        spec = plan.resolved.recipe.base
        assert spec is not None and spec.bootstrap is not None  # Qemu.check refused others
        self.ctx.reporter.phase(
            f"{plan.name}: base disk", f"debian {spec.bootstrap.suite} with mmdebstrap + mkfs.ext4"
        )
        t0 = time.monotonic()
        made = vmbase.ensure_vm_base(
            self.ctx.runner, plan.name, spec.bootstrap, config(plan).disk_size, self.ctx.state / "vm-bases"
        )
        self.ctx.reporter.note(f"base disk {'built' if made.built else 'reused'} ({made.boot.disk})")
        return QemuBase(
            {"name": f"{plan.name}-vmbase", "bootstrap_key": made.key, "digest": made.digest},
            {"base_disk": time.monotonic() - t0},
            boot=made.boot,
            checksum=made.digest,
            machine=self._machine(plan, made.boot.kernel),
        )

    @contextmanager
    def packer_inputs(self, plan: Plan, base: Base, work: Path) -> Iterator[PackerInputs]:
        """A throwaway key pair for this build (removed after), and Packer's variables."""
        assert isinstance(base, QemuBase)
        output, ssh_dir = work / "output", work / "ssh"
        try:
            shutil.rmtree(ssh_dir, ignore_errors=True)
            ssh_dir.mkdir(parents=True, mode=0o700)
            keys = generate_keypair(f"bake-{plan.name}-{plan.short_key}")
            (ssh_dir / "id_ed25519").touch(mode=0o600)
            (ssh_dir / "id_ed25519").write_bytes(keys.private_openssh)
            (ssh_dir / "authorized_keys").write_text(keys.public_openssh + "\n", encoding="utf-8")
            (work / "console.log").unlink(missing_ok=True)
            yield PackerInputs(
                variables=packer_variables(base, work, ssh_dir, output),
                where=f" in a {base.machine.accelerator} VM",
                console=work / "console.log",
            )
        finally:
            shutil.rmtree(ssh_dir, ignore_errors=True)
            if not (output / f"{plan.name}.qcow2").is_file():
                shutil.rmtree(output, ignore_errors=True)

    # --- after Packer -------------------------------------------------------------------

    def built(self, plan: Plan, events: TimedEvents, work: Path, opts: BakeOptions) -> Built:
        output = work / "output"
        for part in (f"{plan.name}.qcow2", "vmlinuz", "initrd.img"):
            if not (output / part).is_file():
                shutil.rmtree(output, ignore_errors=True)
                raise ToolError(f"packer finished but left no {part} for {plan.name} in {output}")
        timings = {f"packer_{k}": v for k, v in packer_phases(events).items()}
        boot = final_files(output, plan.name)
        t0 = time.monotonic()
        files = {
            role: self._file(path)
            for role, path in zip(ROLES, (boot.disk, boot.kernel, boot.initrd), strict=True)
        }
        timings["digest"] = time.monotonic() - t0
        machine = self._machine(plan, boot.kernel)
        return QemuBuilt(
            artifact=self._artifact(
                boot.disk, files, {"accelerator": machine.accelerator, "cmdline": boot.cmdline}
            ),
            timings=timings,
            boot=boot,
            machine=machine,
            output=output,
        )

    @staticmethod
    def _file(path: Path) -> ArtifactFile:
        return ArtifactFile(path, sha256_file(path), path.stat().st_size)

    @staticmethod
    def _artifact(disk: Path, files: dict[str, ArtifactFile], meta: dict[str, str]) -> Artifact:
        return Artifact(
            KIND, id=str(disk), digest=files["disk"].digest if files else None, files=files, meta=meta
        )

    def adopt(self, plan: Plan, ref: str) -> Built:
        disk = Path(ref)
        if not disk.is_file():
            raise BakeError(f"no disk image at {disk}", "give the path of a qcow2 (`bake fetch` writes one)")
        boot = boot_files_beside(disk)
        machine = self._machine(plan, boot.kernel)
        return QemuBuilt(artifact=Artifact(KIND, id=str(disk)), boot=boot, machine=machine)

    def verify(self, plan: Plan, built: Built) -> Verification:
        """Boot a fresh VM of the final disk (never the build VM) and run the checks; for a
        bake, its packages and file manifest are taken there too, for the attestations."""
        mine = _mine(built)
        self.ctx.reporter.phase(
            "verify", f"{len(plan.resolved.verify)} checks in a fresh VM of the final disk"
        )
        baking = mine.output is not None
        verified = verify_vm_disk(
            self.ctx.runner,
            self.ctx.spawn,
            mine.boot,
            mine.machine,
            plan.name,
            plan.resolved.verify,
            self.ctx.state / "work" / f"{plan.name}-{plan.target}-{plan.short_key}" / "verify",
            volatile=plan.resolved.recipe.volatile if baking else None,
        )
        files = None
        if verified.files is not None:
            vol = sorted(volatile_set((*VM_VOLATILE, *plan.resolved.recipe.volatile)))
            files = manifest_predicate(verified.files, vol)
        timings = {
            "verify": verified.report.seconds,
            "verify_boot": verified.boot_seconds,
            "verify_manifest": verified.manifest_seconds,
        }
        found = verified.os
        evidence = Evidence(
            packages=verified.dpkg_status,
            files=files,
            copyrights=found.copyrights if found else None,
            os_release=found.os_release if found else None,
        )
        return Verification(verified.report, timings, evidence)

    def keep(self, plan: Plan, built: Built, verification: Verification | None) -> Artifact:
        """Write the evidence beside the disk and move the folder to the image folder
        (replacing an earlier bake of this key)."""
        mine = _mine(built)
        assert mine.output is not None
        meta: dict[str, str] = dict(mine.artifact.meta)
        dest = image_dir(self.ctx.state, plan)
        evidence = verification.evidence if verification else None
        if evidence is not None and evidence.packages is not None:
            (mine.output / DPKG_STATUS_FILE).write_text(evidence.packages, encoding="utf-8")
            meta["dpkg_status"] = str(dest / DPKG_STATUS_FILE)
        if evidence is not None and evidence.files is not None:
            (mine.output / FILE_MANIFEST_FILE).write_bytes(canonical_json(evidence.files))
            meta["file_manifest"] = str(dest / FILE_MANIFEST_FILE)
        if evidence is not None and evidence.os_release is not None:
            (mine.output / OS_RELEASE_FILE).write_text(evidence.os_release, encoding="utf-8")
            meta["os_release"] = str(dest / OS_RELEASE_FILE)
        if evidence is not None and evidence.copyrights is not None:
            (mine.output / COPYRIGHTS_FILE).write_bytes(canonical_json(dict(evidence.copyrights)))
            meta["copyrights"] = str(dest / COPYRIGHTS_FILE)
        replace_dir(mine.output, dest)
        files = {
            role: ArtifactFile(dest / f.path.name, f.digest, f.size)
            for role, f in mine.artifact.files.items()
        }
        return self._artifact(dest / f"{plan.name}.qcow2", files, meta)

    def discard(self, plan: Plan, built: Built) -> None:
        mine = _mine(built)
        if mine.output is not None:  # an unverified disk is never kept
            shutil.rmtree(mine.output, ignore_errors=True)

    # --- publishing ---------------------------------------------------------------------

    def evidence(self, artifact: Artifact) -> Evidence:
        """What the verified VM showed, kept beside the disk."""
        status = artifact.meta.get("dpkg_status")
        taken = artifact.meta.get("file_manifest")
        os_release = artifact.meta.get("os_release")
        copyrights = artifact.meta.get("copyrights")
        return Evidence(
            packages=Path(status).read_text(encoding="utf-8") if status else None,
            files=json.loads(Path(taken).read_bytes()) if taken else None,
            copyrights=json.loads(Path(copyrights).read_bytes()) if copyrights else None,
            os_release=Path(os_release).read_text(encoding="utf-8") if os_release else None,
        )

    def copy_to(self, artifact: Artifact, registry: Registry, name: str, tag: str) -> Stored:
        files = [DiskFile(role, artifact.files[role].path, artifact.files[role].digest) for role in ROLES]
        ref = registry.store_files(files, name, tag)
        digests = {f.role: f.digest for f in files}
        return Stored(
            digest=digests["disk"],
            subjects=artifact.subjects(name),
            ref=ref,
            artifact_id=f"{name}.qcow2",
            files=digests,
        )
