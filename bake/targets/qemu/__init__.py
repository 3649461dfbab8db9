"""The qemu target: bootable qcow2 VM images, baked by Packer's qemu builder.

A VM image is three files: an unpartitioned ext4 disk, and the kernel and initrd it boots
with (direct kernel boot; see :mod:`bake.targets.qemu.machine`). Plan time (here, pure):
the `targets.qemu` config, and checks that refuse a plan before anything runs. Bake time
(:mod:`bake.targets.qemu.session`): a base disk from mmdebstrap or the parent's disk,
Packer's VM with a throwaway key, verification by booting the final disk, and copies to a
registry by digest. No Docker engine is involved.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bake.errors import BakeError
from bake.model import Model
from bake.targets.base import Artifact, ArtifactFile, BakeContext, Plugin, TargetSession
from bake.targets.qemu.config import QemuConfig
from bake.targets.qemu.machine import KERNEL_CMDLINE, check_disk_sizes

if TYPE_CHECKING:
    from bake.plan import Plan

KIND = "qcow2"
ROLES = ("disk", "kernel", "initrd")  # what boots a VM image (direct kernel boot)
# files kept beside the disk, from the verified VM
EVIDENCE = ("dpkg_status", "file_manifest", "os_release", "copyrights")


def config(plan: Plan) -> QemuConfig:
    conf = plan.resolved.recipe.targets.get("qemu")
    if not isinstance(conf, QemuConfig):
        raise BakeError(
            f"{plan.name} declares no qemu target", f"add `targets: {{qemu: {{}}}}` to {plan.name}"
        )
    return conf


def _file(doc: object) -> ArtifactFile | None:
    if not isinstance(doc, Mapping) or not doc.get("path"):
        return None
    return ArtifactFile(Path(str(doc["path"])), str(doc.get("digest") or ""), int(doc.get("size") or 0))


class Qemu:
    name: ClassVar[str] = "qemu"
    config: ClassVar[type[Model]] = QemuConfig
    template: ClassVar[str] = "qemu.pkr.hcl.j2"
    plugin: ClassVar[Plugin] = Plugin("qemu", "github.com/hashicorp/qemu")
    bakes: ClassVar[bool] = True

    def __init__(self, accelerator: str | None = None) -> None:
        self.accelerator = accelerator  # kvm | tcg: overrides detection (the recipe's `auto`)

    def template_context(self, plan: Plan) -> Mapping[str, object]:
        return {}

    def check(self, plan: Plan) -> None:
        conf = config(plan)
        if conf.ssh_username != "root":
            raise BakeError(
                f"{plan.name}: targets.qemu.ssh_username must be root for bake's own disks",
                "the bake's throwaway key is authorized for root; steps run as root",
            )
        if plan.parent is not None:
            check_disk_sizes(plan.name, conf.disk_size, plan.parent.name, config(plan.parent).disk_size)
        elif plan.resolved.recipe.base is None or plan.resolved.recipe.base.bootstrap is None:
            raise BakeError(
                f"{plan.name}: the qemu target builds on a `base: {{bootstrap: …}}` (or a parent)",
                "a container image reference is not a bootable disk",
            )

    @contextmanager
    def session(self, ctx: BakeContext) -> Iterator[TargetSession]:
        from bake.targets.qemu.session import QemuSession

        yield QemuSession(ctx, self.accelerator)

    def artifact_to_json(self, artifact: Artifact) -> dict[str, Any]:
        meta = artifact.meta
        doc: dict[str, Any] = {k: meta[k] for k in EVIDENCE if meta.get(k)}
        disk = artifact.files.get("disk")
        doc.update({"type": artifact.kind, "path": str(disk.path) if disk else None})
        if disk is not None:
            doc.update({"digest": disk.digest, "size": disk.size})
            for role in ROLES[1:]:
                f = artifact.files[role]
                doc[role] = {"path": str(f.path), "digest": f.digest, "size": f.size}
            doc.update({"cmdline": meta.get("cmdline", KERNEL_CMDLINE), "boot": "direct-kernel"})
        if meta.get("accelerator"):
            doc["accelerator"] = meta["accelerator"]  # what the build and verify VMs ran with
        return doc

    def artifact_from_json(self, doc: Mapping[str, Any]) -> Artifact:
        disk = _file(doc)
        files = {"disk": disk} if disk else {}
        for role in ROLES[1:]:
            f = _file(doc.get(role))
            if f is not None:
                files[role] = f
        meta = {k: doc[k] for k in (*EVIDENCE, "cmdline", "accelerator") if doc.get(k)}
        return Artifact(
            kind=str(doc.get("type") or KIND),
            id=str(disk.path) if disk else "",
            digest=disk.digest if disk else None,
            files=files,
            meta=meta,
        )

    def describe(self, artifact: Artifact) -> list[tuple[str, str]]:
        return [("disk", artifact.id), ("digest", artifact.digest or "")]

    def file_names(self, out: Path) -> dict[str, Path]:
        stem = out.name.removesuffix(".qcow2")
        return {
            "disk": out,
            "kernel": out.with_name(f"{stem}.vmlinuz"),
            "initrd": out.with_name(f"{stem}.initrd.img"),
        }

    def usage(self, files: Mapping[str, Path]) -> str | None:
        return (
            f"qemu-system-x86_64 -m 1024 -nographic -kernel {files['kernel']} -initrd {files['initrd']} "
            f'-append "{KERNEL_CMDLINE}" -drive file={files["disk"]},if=virtio,format=qcow2'
        )
