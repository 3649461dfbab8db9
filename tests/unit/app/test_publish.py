"""Publishing a VM bake needs no Docker engine: a good qemu record's disk, kernel and initrd
go to the registry by digest, attested, and `bake fetch` gets them back with every byte
checked. The files here are small stand-ins; tests/integration/test_vm.py does the same
with a real baked and booted disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bake.attest.digest import canonical_json, sha256_file
from bake.attest.filemanifest import manifest_predicate, volatile_set
from bake.cli import app
from bake.record import BuildRecord, save
from bake.targets.base import Artifact, ArtifactFile
from bake.targets.qemu.machine import BootFiles
from bake.targets.qemu.session import DPKG_STATUS_FILE, FILE_MANIFEST_FILE
from bake.targets.qemu.verify import VM_VOLATILE

cli = CliRunner()
KEY = "sha256:" + "ab" * 32


def vm_record(state: Path) -> Path:
    folder = state / "images" / "qemu" / "web" / "abababababab"
    folder.mkdir(parents=True)
    boot = BootFiles(folder / "web.qcow2", folder / "vmlinuz", folder / "initrd.img")
    for path, size in ((boot.disk, 2 << 20), (boot.kernel, 4000), (boot.initrd, 3000)):
        path.write_bytes(os.urandom(size))
    (folder / DPKG_STATUS_FILE).write_text(
        "Package: nginx-light\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.22.1-9\n\n"
    )
    manifest = manifest_predicate([], sorted(volatile_set(VM_VOLATILE)))
    (folder / FILE_MANIFEST_FILE).write_bytes(canonical_json(manifest))
    files = {
        role: ArtifactFile(path, sha256_file(path), path.stat().st_size)
        for role, path in (("disk", boot.disk), ("kernel", boot.kernel), ("initrd", boot.initrd))
    }
    art = Artifact(
        "qcow2",
        id=str(boot.disk),
        digest=files["disk"].digest,
        files=files,
        meta={
            "dpkg_status": str(folder / DPKG_STATUS_FILE),
            "file_manifest": str(folder / FILE_MANIFEST_FILE),
            "accelerator": "tcg",
        },
    )
    rec = BuildRecord(
        status="good",
        name="web",
        version="1.4.0",
        target="qemu",
        bake_key=KEY,
        recipe_path="recipes/web.yaml",
        packer_version="1.6.6",
        created="2026-11-27T00:00:00Z",
        artifact=art,
        verify={"ok": True, "passed": 1, "failed": 0, "method": "booted-vm", "results": []},
    )
    return save(state, rec)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    keys = tmp_path / "keys"
    result = cli.invoke(app, ["keygen", "--out", str(keys / "ci")], env={"BAKE_KEY_PASSPHRASE": None})
    assert result.exit_code == 0, result.output
    return {
        "BAKE_STATE_DIR": str(tmp_path / "state"),
        "BAKE_SIGNING_KEY": str(keys / "ci.key"),
        "BAKE_TRUST": str(keys / "ci.pub"),
        "BAKE_REGISTRY": f"dir:{tmp_path / 'registry'}",
        "BAKE_KEY_PASSPHRASE": "",
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",  # a VM publish must not need it
    }


def run(env: dict[str, str], *args: str, code: int = 0) -> Result:
    result = cli.invoke(app, list(args), env=env)
    assert result.exit_code == code, result.output
    return result


def test_publish_resolve_fetch_a_vm_image(env: dict[str, str], tmp_path: Path) -> None:
    record = vm_record(Path(env["BAKE_STATE_DIR"]))
    art = json.loads(record.read_text())["artifact"]
    pub = json.loads(run(env, "publish", str(record), "--json").output)
    assert pub["digest"] == art["digest"] and pub["ref"] is None
    assert set(pub["attestations"]) == {"provenance", "test-result", "sbom", "files"}

    res = json.loads(run(env, "resolve", "web@latest", "-t", "qemu", "--json").output)
    assert res["files"] == {
        "disk": art["digest"],
        "kernel": art["kernel"]["digest"],
        "initrd": art["initrd"]["digest"],
    }
    assert res["artifact_id"] == "web.qcow2"

    out = tmp_path / "deploy" / "web.qcow2"
    got = json.loads(run(env, "fetch", "web@latest", "-o", str(out), "--json").output)
    assert sha256_file(out) == art["digest"]
    assert sha256_file(tmp_path / "deploy" / "web.vmlinuz") == art["kernel"]["digest"]
    assert sha256_file(tmp_path / "deploy" / "web.initrd.img") == art["initrd"]["digest"]
    assert got["fetched"]["disk"]["size"] == art["size"]
    assert "-kernel" in got["boot"]


def test_fetch_refuses_a_tampered_disk_and_writes_nothing(env: dict[str, str], tmp_path: Path) -> None:
    record = vm_record(Path(env["BAKE_STATE_DIR"]))
    digest = json.loads(record.read_text())["artifact"]["digest"]
    run(env, "publish", str(record))
    blob = tmp_path / "registry" / "blobs" / "sha256" / digest.removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[1000] ^= 1
    blob.write_bytes(bytes(data))
    out = tmp_path / "deploy" / "web.qcow2"
    result = run(env, "fetch", "web@latest", "-o", str(out), code=1)
    assert "altered" in result.output or "not the signed" in result.output
    assert not out.exists()


def test_fetch_of_a_container_image_says_what_to_do_instead(env: dict[str, str], tmp_path: Path) -> None:
    record = vm_record(Path(env["BAKE_STATE_DIR"]))
    run(env, "publish", str(record))
    result = run(env, "fetch", "web@latest", "-t", "docker", "-o", str(tmp_path / "x"), code=1)
    assert "not built for target 'docker'" in result.output
