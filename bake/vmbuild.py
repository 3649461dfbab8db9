"""One VM bake, end to end: parent → base disk → packer build (qemu) → verify booted → record.

Mirrors bake/build.py (the docker target). A derived recipe builds on its parent's final
qcow2, baked first when no good record of its key (with its disk still present) exists; a
base recipe builds on a bootstrapped base disk (bake/vmbase.py). Packer boots the base with
the parent's kernel and this bake's throwaway key, runs the steps over SSH, keeps the
kernel and initrd beside the disk, shuts down and compacts. The final disk is then booted
again, fresh, and verified (bake/vmverify.py). Only a verified disk moves to the image
folder and is recorded good; a failed bake's disk is deleted and a `failed` record written.

Everything temporary (keys, overlays, Packer's output on failure, QEMU processes) is gone
when this returns or raises, SIGTERM included: Packer gets SIGINT and kills its VM, and
our own cleanup runs in `finally` blocks while SIGTERM is raised as an exception.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bake import packer, process, vmaccel, vmbase
from bake.build import BuildOptions, Outcome, packer_failure, secret_env, verify_doc, verify_failure
from bake.compile import compile_plan, write_tree
from bake.digest import canonical_json, sha256_file
from bake.errors import BakeError, ToolError, VerifyError
from bake.filemanifest import manifest_predicate, volatile_set
from bake.plan import Plan
from bake.process import Call, Interrupted, Runner
from bake.progress import PlainReporter
from bake.recipe.models import QemuTarget
from bake.record import BuildRecord, find_good, record_path, save
from bake.verify import VerifyReport
from bake.vm import BootFiles, Machine, check_disk_sizes, generate_keypair, packer_phases
from bake.vmverify import VM_VOLATILE, Spawner, VmVerification, verify_vm_disk

DEFAULT_OPTIONS = BuildOptions()
DPKG_STATUS_FILE = "dpkg-status"  # beside the disk: what the verified instance had installed
FILE_MANIFEST_FILE = "files.json"  # beside the disk: the verified instance's file manifest


@dataclass(frozen=True)
class VmContext:
    runner: Runner
    state: Path
    reporter: PlainReporter
    environ: Mapping[str, str]
    spawn: Spawner = process.spawn
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    accelerator: str | None = None  # kvm | tcg: overrides detection (recipe `auto`)


@dataclass(frozen=True)
class BaseDisk:
    boot: BootFiles
    checksum: str
    doc: Mapping[str, str]


def image_dir(state: Path, plan: Plan) -> Path:
    """Where a verified bake's disk, kernel and initrd are kept."""
    return state / "images" / "qemu" / plan.name / plan.short_key


def final_files(folder: Path, name: str) -> BootFiles:
    return BootFiles(folder / f"{name}.qcow2", folder / "vmlinuz", folder / "initrd.img")


def qemu_conf(plan: Plan) -> QemuTarget:
    conf = plan.resolved.recipe.targets.qemu
    if conf is None:  # pragma: no cover - plan_recipe only plans declared targets
        raise BakeError(f"{plan.name} declares no qemu target")
    return conf


def reusable(ctx: VmContext, plan: Plan) -> BuildRecord | None:
    """A good record of this exact bake key whose disk, kernel and initrd are still there."""
    rec = find_good(ctx.state, plan.name, plan.target, plan.key)
    if rec is None:
        return None
    art = rec.artifact
    disk = Path(str(art.get("path", "")))
    if not disk.is_file() or disk.stat().st_size != art.get("size"):
        return None
    for part in ("kernel", "initrd"):
        doc = art.get(part)
        if not isinstance(doc, Mapping) or not Path(str(doc.get("path", ""))).is_file():
            return None
    return rec


def bake_vm(ctx: VmContext, plan: Plan, opts: BuildOptions = DEFAULT_OPTIONS) -> Outcome:
    """Bake `plan` (target qemu) into a verified qcow2 and record it."""
    if plan.target != "qemu":
        raise BakeError(f"bake_vm bakes the qemu target, not {plan.target}", "use --target qemu")
    conf = qemu_conf(plan)
    if conf.ssh_username != "root":
        raise BakeError(
            f"{plan.name}: targets.qemu.ssh_username must be root for bake's own disks",
            "the bake's throwaway key is authorized for root; steps run as root",
        )
    with process.terminate_as_interrupt():
        return _bake(ctx, plan, opts)


def _bake(ctx: VmContext, plan: Plan, opts: BuildOptions) -> Outcome:
    if not opts.force:
        cached = reusable(ctx, plan)
        if cached is not None:
            ctx.reporter.note(f"{plan.name} {plan.version}: cached (bake key {plan.short_key})")
            path = record_path(ctx.state, plan.name, plan.target, plan.key)
            return Outcome(cached, path, cached=True)
    started = time.monotonic()
    timings: dict[str, float] = {}
    base, parents = _base(ctx, plan, opts, timings)
    if parents:
        started = time.monotonic()  # the parent's bake has its own record and total
    conf = qemu_conf(plan)
    configured = ctx.accelerator or conf.accelerator
    accelerator = vmaccel.choose(configured, ctx.runner, base.boot.kernel, ctx.state / "vm-accelerator.json")
    machine = Machine(memory=conf.memory, cpus=conf.cpus, accelerator=accelerator)
    work = ctx.state / "work" / f"{plan.name}-{plan.target}-{plan.short_key}"
    output = _packer_build(ctx, plan, base, machine, work, timings)

    def failed(report: VerifyReport | None, error: str) -> Path:
        shutil.rmtree(output, ignore_errors=True)  # an unverified disk is never kept
        rec = _record(ctx, plan, "failed", None, base.doc, timings, started, report, error, machine)
        return save(ctx.state, rec)

    report: VerifyReport | None = None
    if opts.verify:
        # verified where Packer left it; only a verified disk moves to the image folder
        ctx.reporter.phase("verify", f"{len(plan.resolved.verify)} checks in a fresh VM of the final disk")
        staged = final_files(output, plan.name)
        try:
            verified = verify_vm_disk(
                ctx.runner,
                ctx.spawn,
                staged,
                machine,
                plan.name,
                plan.resolved.verify,
                work / "verify",
                volatile=plan.resolved.recipe.volatile,
            )
        except VerifyError as exc:
            failed(None, exc.message)
            raise
        except BaseException:
            shutil.rmtree(output, ignore_errors=True)
            raise
        report = verified.report
        write_evidence(output, verified, plan.resolved.recipe.volatile)
        timings["verify"] = report.seconds
        timings["verify_boot"] = verified.boot_seconds
        timings["verify_manifest"] = verified.manifest_seconds
        if not report.ok:
            raise verify_failure(
                plan, report, "the disk was deleted, not recorded as good", failed(report, "verify failed")
            )
    boot = final_files(_keep(output, image_dir(ctx.state, plan)), plan.name)
    t0 = time.monotonic()
    artifact = artifact_doc(boot, {p: sha256_file(p) for p in (boot.disk, boot.kernel, boot.initrd)})
    timings["digest"] = time.monotonic() - t0
    rec = _record(ctx, plan, "good", artifact, base.doc, timings, started, report, None, machine)
    path = save(ctx.state, rec)
    ctx.reporter.note(f"{plan.name} {plan.version}: good ({artifact['digest'][:19]}, {boot.disk})")
    return Outcome(rec, path, cached=False, parents=tuple(parents))


def write_evidence(folder: Path, verified: VmVerification, volatile: Sequence[str]) -> None:
    """What the verified instance showed, kept beside the disk for the attestations a
    publish makes: its dpkg status (SBOM) and file manifest (drift)."""
    if verified.dpkg_status is not None:
        (folder / DPKG_STATUS_FILE).write_text(verified.dpkg_status, encoding="utf-8")
    if verified.files is not None:
        vol = sorted(volatile_set((*VM_VOLATILE, *volatile)))
        (folder / FILE_MANIFEST_FILE).write_bytes(canonical_json(manifest_predicate(verified.files, vol)))


def _base(
    ctx: VmContext, plan: Plan, opts: BuildOptions, timings: dict[str, float]
) -> tuple[BaseDisk, list[BuildRecord]]:
    """The disk to build on: the parent's final disk, or a bootstrapped base disk."""
    conf = qemu_conf(plan)
    if plan.parent is not None:
        parent_conf = plan.parent.resolved.recipe.targets.qemu
        if parent_conf is None:
            raise BakeError(
                f"{plan.name} extends {plan.parent.name}, which declares no qemu target",
                f"add `targets: {{qemu: {{}}}}` to {plan.parent.name}",
            )
        check_disk_sizes(plan.name, conf.disk_size, plan.parent.name, parent_conf.disk_size)
        out = bake_vm(ctx, plan.parent, BuildOptions(verify=opts.verify))
        art = out.record.artifact
        boot = BootFiles(
            Path(str(art["path"])), Path(str(art["kernel"]["path"])), Path(str(art["initrd"]["path"]))
        )
        doc = {
            "name": plan.parent.name,
            "version": plan.parent.version,
            "bake_key": plan.parent.key,
            "digest": str(art["digest"]),
        }
        return BaseDisk(boot, str(art["digest"]), doc), [*out.parents, out.record]
    spec = plan.resolved.recipe.base
    if spec is None or spec.bootstrap is None:
        raise BakeError(
            f"{plan.name}: the qemu target builds on a `base: {{bootstrap: …}}` (or a parent)",
            "a container image reference is not a bootable disk",
        )
    suite = spec.bootstrap.suite
    ctx.reporter.phase(f"{plan.name}: base disk", f"debian {suite} with mmdebstrap + mkfs.ext4")
    t0 = time.monotonic()
    base = vmbase.ensure_vm_base(
        ctx.runner, plan.name, spec.bootstrap, conf.disk_size, ctx.state / "vm-bases"
    )
    timings["base_disk"] = time.monotonic() - t0
    ctx.reporter.note(f"base disk {'built' if base.built else 'reused'} ({base.boot.disk})")
    doc = {"name": f"{plan.name}-vmbase", "bootstrap_key": base.key, "digest": base.digest}
    return BaseDisk(base.boot, base.digest, doc), []


def packer_variables(
    base: BaseDisk, machine: Machine, work: Path, ssh_dir: Path, output: Path
) -> dict[str, str]:
    """Absolute paths throughout: Packer runs in `work` and QEMU wherever Packer says."""
    return {
        "base_disk": str(base.boot.disk.absolute()),
        "base_disk_checksum": base.checksum,
        "kernel": str(base.boot.kernel.absolute()),
        "initrd": str(base.boot.initrd.absolute()),
        "kernel_cmdline": base.boot.cmdline,
        "accelerator": machine.accelerator,
        "output_directory": str(output.absolute()),
        "ssh_private_key_file": str((ssh_dir / "id_ed25519").absolute()),
        "authorized_keys_file": str((ssh_dir / "authorized_keys").absolute()),
        "console_log": str((work / "console.log").absolute()),
    }


def _packer_build(
    ctx: VmContext, plan: Plan, base: BaseDisk, machine: Machine, work: Path, timings: dict[str, float]
) -> Path:
    """Render the template into `work`, run `packer build`; return Packer's output folder."""
    template = write_tree(compile_plan(plan), work / "template")
    env, sensitive = secret_env(plan, ctx.environ)
    tmp = Path(ctx.environ.get("PACKER_TMP_DIR") or ctx.state / "packer-tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    env["PACKER_TMP_DIR"] = str(tmp)
    output = work / "output"
    ssh_dir = work / "ssh"
    n_steps = len(plan.resolved.steps)
    if hasattr(ctx.reporter, "set_label"):
        ctx.reporter.set_label(f"{plan.name}:", n_steps)
    ctx.reporter.phase("packer build", f"{n_steps} steps in a {machine.accelerator} VM")
    events: list[tuple[float, packer.Event]] = []

    def on_line(line: str) -> None:
        ev = packer.parse_line(line)
        if ev is not None:
            events.append((time.monotonic(), ev))
            ctx.reporter.packer_event(ev)

    try:
        shutil.rmtree(ssh_dir, ignore_errors=True)
        ssh_dir.mkdir(parents=True, mode=0o700)
        keys = generate_keypair(f"bake-{plan.name}-{plan.short_key}")
        (ssh_dir / "id_ed25519").touch(mode=0o600)
        (ssh_dir / "id_ed25519").write_bytes(keys.private_openssh)
        (ssh_dir / "authorized_keys").write_text(keys.public_openssh + "\n", encoding="utf-8")
        (work / "console.log").unlink(missing_ok=True)
        if plan.packer.has_plugins:
            ctx.runner(Call(argv=packer.init_argv(plan.packer, template), env=env, cwd=work))
        variables = packer_variables(base, machine, work, ssh_dir, output)
        argv = packer.build_argv(plan.packer, template, variables)
        t0 = time.monotonic()
        ctx.runner(Call(argv=argv, env=env, cwd=work, sensitive=sensitive, timeout=6 * 3600), on_line)
        timings["packer"] = time.monotonic() - t0
    except Interrupted:
        ctx.reporter.note("interrupted: Packer stopped its VM and removed its output; nothing recorded")
        raise
    except ToolError as exc:
        raise packer_failure(plan, [e for _, e in events], exc, work / "console.log") from None
    finally:
        shutil.rmtree(ssh_dir, ignore_errors=True)
        if not (output / f"{plan.name}.qcow2").is_file():
            shutil.rmtree(output, ignore_errors=True)
    timings.update({f"packer_{k}": v for k, v in packer_phases(events).items()})
    for part in (f"{plan.name}.qcow2", "vmlinuz", "initrd.img"):
        if not (output / part).is_file():
            shutil.rmtree(output, ignore_errors=True)
            raise ToolError(f"packer finished but left no {part} for {plan.name} in {output}")
    return output


def _keep(output: Path, dest: Path) -> Path:
    """Move Packer's output to the image folder (replacing an earlier bake of this key)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    output.rename(dest)
    return dest


def artifact_doc(boot: BootFiles, digests: Mapping[Path, str]) -> dict[str, Any]:
    """The record's artifact: the qcow2 and what boots it (direct kernel boot)."""

    def part(p: Path) -> dict[str, Any]:
        return {"path": str(p), "digest": digests[p], "size": p.stat().st_size}

    extra = {}
    for key, name in (("dpkg_status", DPKG_STATUS_FILE), ("file_manifest", FILE_MANIFEST_FILE)):
        if (boot.disk.parent / name).is_file():
            extra[key] = str(boot.disk.parent / name)
    return {
        **extra,
        "type": "qcow2",
        "path": str(boot.disk),
        "digest": digests[boot.disk],
        "size": boot.disk.stat().st_size,
        "kernel": part(boot.kernel),
        "initrd": part(boot.initrd),
        "cmdline": boot.cmdline,
        "boot": "direct-kernel",
    }


def _record(
    ctx: VmContext,
    plan: Plan,
    status: str,
    artifact: Mapping[str, Any] | None,
    parent: Mapping[str, str],
    timings: Mapping[str, float],
    started: float,
    report: VerifyReport | None,
    error: str | None,
    machine: Machine,
) -> BuildRecord:
    total = dict(timings)
    total["total"] = time.monotonic() - started
    art = dict(artifact) if artifact else {"type": "qcow2", "path": None}
    art["accelerator"] = machine.accelerator  # what the build and verify VMs ran with
    return BuildRecord(
        status=status,
        name=plan.name,
        version=plan.version,
        target=plan.target,
        bake_key=plan.key,
        recipe_path=str(plan.resolved.path),
        packer_version=plan.packer.text,
        created=ctx.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        inputs=dict(plan.inputs),
        artifact=art,
        parent=dict(parent),
        timings=total,
        verify=verify_doc(plan, report.to_json() if report else {"ok": None, "skipped": error is None}),
        error=error,
    )
