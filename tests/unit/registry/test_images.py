"""Image copies (skopeo argv, pure) and file artifacts (against the in-memory registry).

The runner is injected: a fake records each Call and plays skopeo's and docker's part.
tests/integration/test_oci_registry.py runs the real skopeo, engine and registry.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bake.attest.digest import sha256_bytes
from bake.errors import RegistryError, ToolError, TrustError
from bake.infra.process import Call, LineSink, Result
from bake.registry import images
from bake.registry.images import (
    PushedImage,
    RegistryRef,
    auth_json,
    config_digest,
    copy_argv,
    inspect_argv,
    layout_argv,
    layout_tag,
    local_name,
    parse_layout_ref,
    parse_repo,
    push_argv,
)
from bake.registry.ocistore import Credentials

HOST = "unix:///tmp/dk/docker.sock"
IMAGE = sha256_bytes(b"config")
MANIFEST = json.dumps({"schemaVersion": 2, "config": {"digest": IMAGE, "size": 6}, "layers": []}).encode()
DIGEST = sha256_bytes(MANIFEST)


# --------------------------------------------------------------------------- pure


def test_push_argv_to_a_loopback_registry(tmp_path: Path) -> None:
    argv = push_argv(HOST, IMAGE, "127.0.0.1:5000/bake/web", "1.4.0-2", digestfile=tmp_path / "d")
    assert argv == (
        "skopeo", "copy", "--quiet",
        "--src-daemon-host", HOST,
        "--dest-tls-verify=false",
        "--digestfile", str(tmp_path / "d"),
        "--",
        f"docker-daemon:{IMAGE}",
        "docker://127.0.0.1:5000/bake/web:1.4.0-2",
    )  # fmt: skip


def test_push_argv_to_a_remote_registry_verifies_tls_and_takes_an_auth_file(tmp_path: Path) -> None:
    argv = push_argv(
        HOST, IMAGE, "reg.example.org/team/web", "v1", digestfile=tmp_path / "d", authfile=tmp_path / "a"
    )
    assert not any("tls-verify" in a for a in argv)
    assert argv[-1] == "docker://reg.example.org/team/web:v1"
    assert ("--dest-authfile", str(tmp_path / "a")) == argv[argv.index("--dest-authfile") :][:2]


@pytest.mark.parametrize(
    ("repo", "tag", "message"),
    [
        ("127.0.0.1:5000", "v1", "names no repository"),
        ("127.0.0.1:5000/Web", "v1", "not a valid repository path component"),
        ("127.0.0.1:5000/web", "v1+2", "not a valid image tag"),
        ("127.0.0.1:5000/web", "", "not a valid image tag"),
    ],
)
def test_push_argv_refuses_bad_destinations(tmp_path: Path, repo: str, tag: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        push_argv(HOST, IMAGE, repo, tag, digestfile=tmp_path / "d")


def test_layout_and_inspect_and_pull_argv(tmp_path: Path) -> None:
    assert layout_argv(HOST, IMAGE, tmp_path / "oci" / "web", "1.4.0", digestfile=tmp_path / "d") == (
        "skopeo", "copy", "--quiet", "--src-daemon-host", HOST, "--digestfile", str(tmp_path / "d"),
        "--", f"docker-daemon:{IMAGE}", f"oci:{tmp_path}/oci/web:1.4.0",
    )  # fmt: skip
    ref = RegistryRef.parse(f"127.0.0.1:5000/bake/web@{DIGEST}")
    assert inspect_argv(ref) == (
        "skopeo", "inspect", "--raw", "--tls-verify=false", "--", f"docker://127.0.0.1:5000/bake/web@{DIGEST}",
    )  # fmt: skip
    remote = RegistryRef.parse(f"reg.example.org/web@{DIGEST}")
    assert inspect_argv(remote, authfile=Path("/a")) == (
        "skopeo", "inspect", "--raw", "--authfile", "/a", "--", f"docker://reg.example.org/web@{DIGEST}",
    )  # fmt: skip
    assert copy_argv("docker://x", "docker-daemon:y:z", dest_daemon_host=HOST, src_insecure=True) == (
        "skopeo", "copy", "--quiet", "--dest-daemon-host", HOST, "--src-tls-verify=false",
        "--", "docker://x", "docker-daemon:y:z",
    )  # fmt: skip


def test_references() -> None:
    ref = RegistryRef.parse(f"127.0.0.1:5000/bake/web@{DIGEST}")
    assert (ref.location.host, ref.repository, ref.digest) == ("127.0.0.1:5000", "bake/web", DIGEST)
    assert str(ref) == f"127.0.0.1:5000/bake/web@{DIGEST}"
    assert local_name(ref) == f"127.0.0.1:5000/bake/web:{DIGEST.replace(':', '-')}"
    assert local_name((Path("/r/oci/web"), DIGEST)) == f"bake-layout:{DIGEST.replace(':', '-')}"
    for bad in ("127.0.0.1:5000/web:1.0", f"127.0.0.1:5000@{DIGEST}", "127.0.0.1:5000/web@sha256:abc"):
        with pytest.raises(RegistryError):
            RegistryRef.parse(bad)
    assert parse_layout_ref(f"oci-layout:///r/oci/web@{DIGEST}") == (Path("/r/oci/web"), DIGEST)
    for bad in (f"/r/oci/web@{DIGEST}", "oci-layout:///r@sha256:x", f"oci-layout://@{DIGEST}"):
        with pytest.raises(RegistryError, match="not an OCI layout reference"):
            parse_layout_ref(bad)
    assert parse_repo("127.0.0.1:5000/bake/web").prefix == "bake/web"


def test_layout_tags_and_config_digests(tmp_path: Path) -> None:
    index = {
        "schemaVersion": 2,
        "manifests": [
            {"digest": sha256_bytes(b"other"), "annotations": {"org.opencontainers.image.ref.name": "old"}},
            {"digest": DIGEST},  # untagged
            {"digest": DIGEST, "annotations": {"org.opencontainers.image.ref.name": "1.4.0"}},
        ],
    }
    assert layout_tag(json.dumps(index).encode(), DIGEST, tmp_path) == "1.4.0"
    with pytest.raises(RegistryError, match="has no tagged image"):
        layout_tag(json.dumps(index).encode(), sha256_bytes(b"absent"), tmp_path)
    with pytest.raises(TrustError, match=r"index\.json is not valid JSON"):
        layout_tag(b"{", DIGEST, tmp_path)
    assert config_digest(MANIFEST, "m") == IMAGE
    for bad in (b"{", b"{}", json.dumps({"config": {"digest": "x"}}).encode()):
        with pytest.raises(TrustError):
            config_digest(bad, "m")


def test_auth_json() -> None:
    doc = json.loads(auth_json("127.0.0.1:5000", Credentials("ci", "s3cret")))
    assert doc == {"auths": {"127.0.0.1:5000": {"auth": "Y2k6czNjcmV0"}}}


# --------------------------------------------------------------------------- with a fake runner


@dataclass
class FakeTools:
    """skopeo and docker as far as images.py uses them."""

    manifest: bytes = MANIFEST
    digest: str = DIGEST
    engine_images: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    authfiles: list[tuple[int, bytes]] = field(default_factory=list)
    on_copy: Callable[[Call], object] | None = None

    def __call__(self, call: Call, on_line: LineSink | None = None) -> Result:
        self.calls.append(call)
        argv = call.argv
        stdout = ""
        for flag in ("--dest-authfile", "--authfile"):
            if flag in argv:
                path = Path(argv[argv.index(flag) + 1])
                self.authfiles.append((stat.S_IMODE(path.stat().st_mode), path.read_bytes()))
        if argv[:2] == ("skopeo", "copy"):
            if "--digestfile" in argv:
                Path(argv[argv.index("--digestfile") + 1]).write_text(self.digest)
            if argv[-1].startswith("docker-daemon:"):
                self.engine_images[argv[-1].removeprefix("docker-daemon:")] = IMAGE
            if self.on_copy is not None:
                self.on_copy(call)
        elif argv[:2] == ("skopeo", "inspect"):
            stdout = self.manifest.decode() + "\n"
        elif argv[:3] == ("docker", "image", "inspect"):
            found = self.engine_images.get(argv[-1])
            if found is None:
                return Result(argv, 1, "", "no such image", 0.0)
            stdout = json.dumps([{"Id": found}])
        return Result(argv, 0, stdout, "", 0.0)


def test_push_docker_image(tmp_path: Path) -> None:
    tools = FakeTools()
    pushed = images.push_docker_image(tools, HOST, IMAGE, "127.0.0.1:5000/bake/web", "1.4.0", environ={})
    assert pushed == PushedImage(f"127.0.0.1:5000/bake/web@{DIGEST}", DIGEST, IMAGE, IMAGE)
    copy, inspect = tools.calls
    assert copy.argv[-1] == "docker://127.0.0.1:5000/bake/web:1.4.0"
    assert inspect.argv[-1] == f"docker://127.0.0.1:5000/bake/web@{DIGEST}"
    assert tools.authfiles == []
    digestfile = Path(copy.argv[copy.argv.index("--digestfile") + 1])
    assert not digestfile.parent.exists()  # the scratch folder is gone


def test_push_docker_image_passes_credentials_in_a_private_file() -> None:
    tools = FakeTools()
    env = {"BAKE_REGISTRY_USER": "ci", "BAKE_REGISTRY_PASSWORD": "s3cret"}
    images.push_docker_image(tools, HOST, IMAGE, "reg.example.org/web", "1", environ=env)
    assert all("s3cret" not in " ".join(c.argv) for c in tools.calls)
    assert tools.authfiles and all(mode == 0o600 for mode, _ in tools.authfiles)
    assert json.loads(tools.authfiles[0][1]) == json.loads(
        auth_json("reg.example.org", Credentials("ci", "s3cret"))
    )


def test_push_docker_image_without_a_digest(tmp_path: Path) -> None:
    tools = FakeTools(digest="")
    with pytest.raises(ToolError, match="wrote no manifest digest"):
        images.push_docker_image(tools, HOST, IMAGE, "127.0.0.1:5000/web", "1", environ={})


def write_layout(layout: Path, tag: str, manifest: bytes = MANIFEST) -> str:
    digest = sha256_bytes(manifest)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest.removeprefix("sha256:")).write_bytes(manifest)
    entry = {"digest": digest, "annotations": {"org.opencontainers.image.ref.name": tag}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return digest


def test_export_to_a_layout_and_pull_back(tmp_path: Path) -> None:
    layout = tmp_path / "reg" / "oci" / "web"
    tools = FakeTools(on_copy=lambda call: write_layout(layout, "1.4.0") if "oci:" in call.argv[-1] else None)
    pushed = images.export_docker_image_to_layout(tools, HOST, IMAGE, layout, "1.4.0")
    assert pushed == PushedImage(f"oci-layout://{layout}@{DIGEST}", DIGEST, IMAGE, IMAGE)

    image = images.pull_to_docker(tools, HOST, pushed.ref)
    assert image == IMAGE
    copy = tools.calls[-2]
    assert copy.argv[-2:] == (f"oci:{layout}:1.4.0", f"docker-daemon:{local_name((layout, DIGEST))}")

    blob = layout / "blobs" / "sha256" / DIGEST.removeprefix("sha256:")
    blob.write_bytes(MANIFEST.replace(b"layers", b"LAYERS"))
    with pytest.raises(TrustError, match="was altered"):
        images.pull_to_docker(tools, HOST, pushed.ref)
    blob.unlink()
    with pytest.raises(RegistryError, match="is missing from the OCI layout"):
        images.pull_to_docker(tools, HOST, pushed.ref)


def test_pull_from_a_registry(tmp_path: Path) -> None:
    tools = FakeTools()
    ref = f"127.0.0.1:5000/bake/web@{DIGEST}"
    assert images.pull_to_docker(tools, HOST, ref, name="web:pinned", environ={}) == IMAGE
    (copy, _) = tools.calls
    assert copy.argv[-4:] == ("--src-tls-verify=false", "--", f"docker://{ref}", "docker-daemon:web:pinned")

    tools.on_copy = lambda call: tools.engine_images.clear()
    with pytest.raises(ToolError, match="has no web:pinned"):
        images.pull_to_docker(tools, HOST, ref, name="web:pinned", environ={})
