"""Bake → publish → resolve → pull → run, on the embedded `dir:` registry, for real.

Also: promote / rollback / revoke change what resolve returns; tampering with any
published byte (artifact, attestation, image document, TUF metadata) is caught by resolve;
replayed older metadata is refused, on a fresh machine too when it holds a lock file; the
reference TUF client reads the registry over plain HTTP.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from tuf.ngclient import Updater
from typer.testing import CliRunner, Result

from bake.cli import app
from bake.infra.packer import PackerInfo
from bake.registry import images
from bake.targets.base import BakeOptions, Outcome
from bake.targets.docker import engine as docker
from tests.conftest import RECIPES
from tests.integration.conftest import Bakes, plan_of

pytestmark = pytest.mark.integration

cli = CliRunner()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    result = cli.invoke(app, ["keygen", "--out", str(folder / "ci")])
    assert result.exit_code == 0, result.output
    assert (folder / "ci.key").stat().st_mode & 0o777 == 0o600
    return folder


def _env(context: Bakes, keys: Path, registry: Path) -> dict[str, str]:
    return {
        "BAKE_STATE_DIR": str(context.state),
        "DOCKER_HOST": context.engine.host,
        "BAKE_SIGNING_KEY": str(keys / "ci.key"),
        "BAKE_TRUST": str(keys / "ci.pub"),
        "BAKE_REGISTRY": f"dir:{registry}",
        "BAKE_KEY_PASSPHRASE": "",
    }


@pytest.fixture(scope="module")
def published(
    context: Bakes, keys: Path, baked_web: Outcome, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object]]:
    """A registry holding debian-base and web (promoted to stable), published once."""
    registry = tmp_path_factory.mktemp("published") / "registry"
    env = _env(context, keys, registry)
    out = json.loads(run(env, "publish", str(baked_web.record_path), "--json").output)
    run(env, "promote", "web@latest", "stable")
    return registry, out


@pytest.fixture
def env(
    context: Bakes, keys: Path, tmp_path: Path, published: tuple[Path, object]
) -> Iterator[dict[str, str]]:
    """A private copy of the published registry for each test (a fresh URL, so fresh
    replay state)."""
    registry = tmp_path / "registry"
    shutil.copytree(published[0], registry)
    yield _env(context, keys, registry)


def run(env: dict[str, str], *args: str, ok: bool = True) -> Result:
    result = cli.invoke(app, list(args), env=env)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def resolve(env: dict[str, str], spec: str, ok: bool = True) -> Result:
    return run(env, "resolve", spec, "--format", "json", ok=ok)


@pytest.fixture(scope="module")
def second_web(context: Bakes, packer_info: PackerInfo, baked_web: Outcome) -> Outcome:
    """web 1.4.0 again with another var: a different bake key, so a new build (1.4.0+2)."""
    p = plan_of(RECIPES / "web.yaml", packer_info, extra_vars={"server_name": "second.internal"})
    return context.bake(p, BakeOptions())


def test_publish_resolve_pull_run(
    env: dict[str, str], baked_web: Outcome, context: Bakes, published: tuple[Path, dict[str, Any]]
) -> None:
    out = published[1]
    assert out["version"] == "1.4.0+1" and str(out["ref"]).startswith("oci-layout:oci/web@")
    again = json.loads(run(env, "publish", str(baked_web.record_path), "--json").output)
    assert again["version"] == "1.4.0+1" and again["created"] is False  # idempotent
    assert set(out["attestations"]) == {"provenance", "test-result", "sbom", "files"}
    ls = json.loads(run(env, "ls", "--json").output)
    assert {i["name"] for i in ls["images"]} == {"debian-base", "web"}  # the parent came first
    res = json.loads(resolve(env, "web@stable").output)
    assert res["version"] == "1.4.0+1" and res["layout_ref"].endswith(res["digest"])
    # the ref is one skopeo (and podman, buildah) accepts as it is: oci:DIR:TAG
    assert res["ref"].startswith("oci:/") and res["ref"] == res["transport_ref"]
    inspected = subprocess.run(["skopeo", "inspect", res["ref"]], capture_output=True, text=True, check=True)
    assert json.loads(inspected.stdout)["Digest"] == res["digest"]
    # copied from the normalized layout: the published digest is the reproducible one
    assert res["digest"] == baked_web.record.artifact.digest
    raw = json.loads(
        subprocess.run(["skopeo", "inspect", "--raw", res["ref"]], capture_output=True, check=True).stdout
    )
    assert raw["annotations"]["org.opencontainers.image.revision"] == baked_web.record.bake_key
    # a deployer loads the image by digest into an engine and runs it
    image = images.pull_to_docker(context.runner, context.engine.host, res["ref"], name="deploy/web:pinned")
    conf = context.runner(
        context.engine.call("run", "--rm", "--entrypoint", "cat", image, "/etc/nginx/conf.d/site.conf")
    ).stdout
    assert "listen 8080;" in conf


def test_promote_rollback_revoke(
    env: dict[str, str], baked_web: Outcome, second_web: Outcome, tmp_path: Path
) -> None:
    out = json.loads(run(env, "publish", str(second_web.record_path), "--json").output)
    assert out["version"] == "1.4.0+2"
    assert json.loads(resolve(env, "web@1.4.0").output)["version"] == "1.4.0+2"
    run(env, "promote", "web@1.4.0+2", "stable")
    assert json.loads(resolve(env, "web@stable").output)["version"] == "1.4.0+2"
    run(env, "rollback", "web", "stable")
    assert json.loads(resolve(env, "web@stable").output)["version"] == "1.4.0+1"
    run(env, "revoke", "web@1.4.0+1", "--reason", "CVE-2026-0001 in the site config")
    refused = resolve(env, "web@stable", ok=False)
    assert refused.exit_code == 1 and "revoked" in refused.output and "CVE-2026-0001" in refused.output
    assert json.loads(resolve(env, "web@1.4.0").output)["version"] == "1.4.0+2"
    # pin and lock check: a pin to a revoked build is reported
    lock = tmp_path / "bake.lock"
    run(env, "pin", "web@1.4.0", "--lock", str(lock))
    assert json.loads(lock.read_text())["pins"][0]["version"] == "1.4.0+2"
    assert run(env, "lock", "check", str(lock)).exit_code == 0
    run(env, "revoke", "web@1.4.0+2", "--reason", "bad")
    check = run(env, "lock", "check", str(lock), "--json", ok=False)
    assert check.exit_code == 1 and "revoked" in check.output


def test_revoke_cascade(env: dict[str, str], baked_web: Outcome) -> None:
    run(env, "revoke", "debian-base@1.0.0", "--reason", "base compromised", "--cascade")
    refused = resolve(env, "web@1.4.0", ok=False)
    assert refused.exit_code == 1 and "revoked" in refused.output


def _registry_path(env: dict[str, str]) -> Path:
    return Path(env["BAKE_REGISTRY"].removeprefix("dir:"))


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _stored(reg: Path, pattern: str) -> list[Path]:
    found = sorted((reg / "targets").glob(pattern))
    assert found, pattern
    return found


@pytest.mark.parametrize("what", ["layer", "manifest", "attestation", "image-doc", "timestamp", "snapshot"])
def test_tampering_is_caught(env: dict[str, str], published: tuple[Path, dict[str, Any]], what: str) -> None:
    out = published[1]
    resolve(env, "web@stable")  # fine before
    reg = _registry_path(env)
    if what in ("layer", "manifest"):
        layout = reg / "oci" / "web"
        manifest_path = layout / "blobs" / "sha256" / out["digest"].removeprefix("sha256:")
        if what == "manifest":
            _flip(manifest_path)
        else:
            layer = json.loads(manifest_path.read_bytes())["layers"][-1]["digest"]
            _flip(layout / "blobs" / "sha256" / layer.removeprefix("sha256:"))
    elif what in ("attestation", "image-doc"):
        pattern = (
            "attestations/web/1.4.0+1/*.provenance.json" if what == "attestation" else "images/*.web.json"
        )
        for stored in _stored(reg, pattern):  # every version of it
            _flip(stored)
    elif what == "timestamp":
        stamp = json.loads((reg / "metadata" / "timestamp.json").read_bytes())
        stamp["signed"]["expires"] = "2099-01-01T00:00:00Z"
        (reg / "metadata" / "timestamp.json").write_text(json.dumps(stamp))
    else:
        newest = max((reg / "metadata").glob("*.snapshot.json"), key=lambda p: int(p.name.split(".")[0]))
        _flip(newest)
    # a fresh machine (no cached metadata) refuses it, and so does the one that published
    # (except for the snapshot: it holds a verified copy of that version and never reads it again)
    states = [str(reg.parent / "fresh-state")] + ([] if what == "snapshot" else [env["BAKE_STATE_DIR"]])
    for state in states:
        refused = resolve({**env, "BAKE_STATE_DIR": state}, "web@stable", ok=False)
        assert refused.exit_code == 1, refused.output


def test_a_replayed_registry_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    """An attacker puts back yesterday's metadata. The client that saw today's refuses it
    (TUF rollback protection); a fresh runner with no cache only knows what its lock file
    says, and the lock's metadata versions refuse it there too."""
    reg = _registry_path(env)
    old = tmp_path / "old"
    shutil.copytree(reg / "metadata", old)
    run(env, "promote", "web@latest", "beta")
    lock = tmp_path / "bake.lock"
    run(env, "pin", "web@beta", "--lock", str(lock))
    shutil.rmtree(reg / "metadata")
    shutil.copytree(old, reg / "metadata")
    seen = resolve(env, "web@1.4.0", ok=False)
    assert seen.exit_code == 1 and "rollback" in seen.output.lower(), seen.output
    fresh = {**env, "BAKE_STATE_DIR": str(tmp_path / "fresh-runner")}
    check = run(fresh, "lock", "check", str(lock), "--json", ok=False)
    assert check.exit_code == 1
    kinds = {f["kind"] for f in json.loads(check.output)["findings"]}
    assert "rollback" in kinds, check.output
    refused = run(fresh, "resolve", "web@1.4.0", "--lock", str(lock), ok=False)
    assert refused.exit_code == 1 and "older" in refused.output, refused.output


def test_a_lock_of_another_registry_is_an_error_not_skipped(env: dict[str, str], tmp_path: Path) -> None:
    lock = tmp_path / "bake.lock"
    run(env, "pin", "web@stable", "--lock", str(lock))
    moved = tmp_path / "moved"
    shutil.copytree(_registry_path(env), moved)
    check = run({**env, "BAKE_REGISTRY": f"dir:{moved}"}, "lock", "check", str(lock), "--json", ok=False)
    assert check.exit_code == 1
    assert {f["kind"] for f in json.loads(check.output)["findings"]} == {"unchecked"}, check.output


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_reference_tuf_client_reads_the_registry_over_http(
    env: dict[str, str], published: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A `dir:` registry served by any static web server is a TUF repository: python-tuf's
    Updater, with its own HTTP fetcher and nothing but the first root, finds and verifies
    the image document and its attestations."""
    reg = _registry_path(env)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(reg)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        cache = tmp_path / "tuf-cache"
        cache.mkdir()
        updater = Updater(
            str(cache),
            f"{base}/metadata/",
            target_dir=str(cache),
            target_base_url=f"{base}/targets/",
            bootstrap=(reg / "metadata" / "1.root.json").read_bytes(),
        )
        updater.refresh()
        info = updater.get_targetinfo("images/web.json")
        assert info is not None
        doc = json.loads(Path(updater.download_target(info)).read_bytes())
        printed = json.loads(resolve(env, "web@stable").output)
        assert doc["channels"]["stable"]["current"] == printed["version"]
        assert doc["versions"][printed["version"]]["targets"]["docker"]["digest"] == printed["digest"]
        provenance = updater.get_targetinfo("attestations/web/1.4.0+1/provenance.json")
        assert provenance is not None
        assert "sha256:" + provenance.hashes["sha256"] == published[1]["attestations"]["provenance"]
    finally:
        server.shutdown()
        server.server_close()


def test_build_with_registry_skips_when_key_is_published(
    env: dict[str, str], baked_web: Outcome, context: Bakes
) -> None:
    out = json.loads(run(env, "build", str(RECIPES / "web.yaml"), "--json").output)
    assert out["cached"] == "registry" and out["version"] == "1.4.0+1"
    shutil.rmtree(_registry_path(env))
    assert docker.containers(context.runner, context.engine, label="io.bake.verify") == []
