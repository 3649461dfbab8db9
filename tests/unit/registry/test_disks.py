"""VM image files in a registry: dir: blobs and an OCI artifact (the in-memory registry),
fetched all or nothing with every byte checked. tests/integration/test_vm.py publishes and
fetches a real baked disk through dir: and the Debian docker-registry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bake.attest.digest import sha256_file
from bake.errors import RegistryError, TrustError
from bake.registry import disks
from bake.registry.images import QCOW2_ARTIFACT_TYPE
from bake.registry.ocistore import parse_manifest
from tests.unit.registry.test_ocistore import FakeRegistry


def vm_files(folder: Path) -> list[disks.DiskFile]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for role, name, size in (
        ("disk", "web.qcow2", 3 << 20),
        ("kernel", "vmlinuz", 1000),
        ("initrd", "initrd.img", 500),
    ):
        path = folder / name
        path.write_bytes(os.urandom(size))
        out.append(disks.DiskFile(role, path, sha256_file(path)))
    return out


def dests(folder: Path) -> dict[str, Path]:
    return {
        "disk": folder / "web.qcow2",
        "kernel": folder / "web.vmlinuz",
        "initrd": folder / "web.initrd.img",
    }


def test_dir_store_and_fetch_round_trip(tmp_path: Path) -> None:
    files = vm_files(tmp_path / "bake")
    root = tmp_path / "reg"
    disks.store_in_dir(root, files)
    for f in files:
        assert disks.dir_blob(root, f.digest).read_bytes() == f.path.read_bytes()
    disks.store_in_dir(root, files)  # a republish: already there
    assert sorted(p.name for p in (root / "blobs" / "sha256").iterdir()) == sorted(
        f.digest.removeprefix("sha256:") for f in files
    )
    got = disks.fetch(f"dir:{root}", None, {f.role: f.digest for f in files}, dests(tmp_path / "out"))
    assert {g.role: g.path.read_bytes() for g in got} == {f.role: f.path.read_bytes() for f in files}
    assert {g.role: g.size for g in got} == {f.role: f.path.stat().st_size for f in files}


def test_a_tampered_blob_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    files = vm_files(tmp_path / "bake")
    root = tmp_path / "reg"
    disks.store_in_dir(root, files)
    kernel = next(f for f in files if f.role == "kernel")
    disks.dir_blob(root, kernel.digest).write_bytes(b"a different kernel")
    out = tmp_path / "out"
    with pytest.raises(TrustError, match="not the signed"):
        disks.fetch(f"dir:{root}", None, {f.role: f.digest for f in files}, dests(out))
    assert list(out.iterdir()) == []  # the disk fetched before the kernel is not kept either


def test_a_missing_blob_says_so(tmp_path: Path) -> None:
    files = vm_files(tmp_path / "bake")
    with pytest.raises(RegistryError, match="missing"):
        disks.fetch(
            f"dir:{tmp_path / 'empty'}", None, {f.role: f.digest for f in files}, dests(tmp_path / "o")
        )


def test_a_file_that_changed_since_the_bake_is_not_stored(tmp_path: Path) -> None:
    files = vm_files(tmp_path / "bake")
    files[0].path.write_bytes(b"changed after it was verified")
    with pytest.raises(TrustError):
        disks.store_in_dir(tmp_path / "reg", files)
    assert not disks.dir_blob(tmp_path / "reg", files[0].digest).exists()


def test_oci_artifact_with_three_layers_round_trip(tmp_path: Path) -> None:
    fake = FakeRegistry()
    files = vm_files(tmp_path / "bake")
    ref = disks.push_to_oci(files, "127.0.0.1:5000/bake/web", "1.4.0-abc", chunk=2 << 20, send=fake)
    assert fake.count("PATCH") == 4  # the disk in 2 MiB + 1 MiB, then kernel and initrd
    assert max(fake.bodies) <= 1 << 20  # each chunk is sent 1 MiB at a time, memory stays flat
    repo, _, digest = ref.partition("/")[2].partition("@")
    raw = json.loads(fake.manifests[repo, digest])
    assert raw["artifactType"] == QCOW2_ARTIFACT_TYPE
    _, layers = parse_manifest(fake.manifests[repo, digest], "m")
    assert [(layer.digest, layer.media_type) for layer in layers] == [
        (f.digest, disks.MEDIA_TYPES[f.role]) for f in files
    ]
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in raw["layers"]] == [
        "web.qcow2",
        "vmlinuz",
        "initrd.img",
    ]
    patches = fake.count("PATCH")
    assert disks.push_to_oci(files, "127.0.0.1:5000/bake/web", "1.4.0-abc", send=fake) == ref
    assert fake.count("PATCH") == patches  # a republish uploads nothing

    wanted = {f.role: f.digest for f in files}
    got = disks.fetch("oci://127.0.0.1:5000/bake", ref, wanted, dests(tmp_path / "out"), send=fake)
    assert {g.role: sha256_file(g.path) for g in got} == wanted

    fake.blobs[repo, files[0].digest] = b"tampered"
    with pytest.raises(TrustError):
        disks.fetch("oci://127.0.0.1:5000/bake", ref, wanted, dests(tmp_path / "bad"), send=fake)
    assert list((tmp_path / "bad").iterdir()) == []
