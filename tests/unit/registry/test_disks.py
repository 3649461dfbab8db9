"""VM image files in a registry: dir: blobs and an OCI artifact (the in-memory registry),
fetched all or nothing with every byte checked. tests/integration/test_vm.py publishes and
fetches a real baked disk through dir: and the Debian docker-registry."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
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


# --------------------------------------------------------------------------- all or nothing


def two_versions(tmp_path: Path) -> tuple[str, dict[str, str], dict[str, str]]:
    """A dir: registry holding two builds' files: its URL and each build's role -> digest."""
    root = tmp_path / "reg"
    v1, v2 = vm_files(tmp_path / "v1"), vm_files(tmp_path / "v2")
    disks.store_in_dir(root, [*v1, *v2])
    return f"dir:{root}", {f.role: f.digest for f in v1}, {f.role: f.digest for f in v2}


def fetched(out: Path) -> dict[str, str]:
    return {role: sha256_file(path) for role, path in dests(out).items()}


def test_sigint_during_the_switch_waits_for_the_whole_set(tmp_path: Path) -> None:
    url, v1, v2 = two_versions(tmp_path)
    out = tmp_path / "out"
    disks.fetch(url, None, v1, dests(out))
    renames: list[Path] = []

    def interrupted_rename(src: Path, dst: Path) -> None:
        renames.append(dst)
        if len(renames) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between two renames
        os.replace(src, dst)

    with pytest.raises(KeyboardInterrupt):
        disks.fetch(url, None, v2, dests(out), rename=interrupted_rename)
    assert len(renames) == 3 and fetched(out) == v2  # the interrupt came after the last one
    assert not list(out.glob(".fetch-*"))


KILLED_FETCH = """
import os, signal, sys
from pathlib import Path
from bake.registry import disks
url, out, kill_at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
files = dict(arg.split("=") for arg in sys.argv[4:])
renames = []
def rename(src, dst):
    renames.append(dst)
    if len(renames) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace(src, dst)
names = {"disk": "web.qcow2", "kernel": "web.vmlinuz", "initrd": "web.initrd.img"}
disks.fetch(url, None, files, {r: out / n for r, n in names.items()}, rename=rename)
"""


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_fetch_killed_mid_switch_is_completed_by_the_next_one(tmp_path: Path, kill_at: int) -> None:
    url, v1, v2 = two_versions(tmp_path)
    out = tmp_path / "out"
    disks.fetch(url, None, v1, dests(out))
    argv = [
        sys.executable,
        "-c",
        KILLED_FETCH,
        url,
        str(out),
        str(kill_at),
        *(f"{r}={d}" for r, d in v2.items()),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(disks.__file__).resolve().parents[2])}
    assert subprocess.run(argv, env=env, check=False).returncode == -signal.SIGKILL
    assert len(list(out.glob(".fetch-*"))) == 1  # what the killed fetch left: a stage with its journal
    assert disks.sweep_stages(out) == 1
    assert fetched(out) == v2 and not list(out.glob(".fetch-*"))
    disks.fetch(url, None, v1, dests(out))  # and a fetch goes on from there
    assert fetched(out) == v1


def test_stale_stages_are_swept_and_live_ones_left(tmp_path: Path) -> None:
    url, v1, _ = two_versions(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".fetch-12345-abcd"  # a fetch killed while downloading: no journal yet
    dead.mkdir()
    (dead / "web.qcow2").write_bytes(os.urandom(1 << 20))
    older = out / f".fetch-web.qcow2-{2**22 + 7}"  # a stage file of an earlier bake, its pid gone
    older.write_bytes(b"x")
    live = out / ".fetch-live"
    live.mkdir()
    with (live / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        disks.fetch(url, None, v1, dests(out))
        assert sorted(p.name for p in out.glob(".fetch-*")) == [".fetch-live"]
    assert fetched(out) == v1
