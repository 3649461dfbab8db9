"""The same deployer flow against a real OCI registry (Debian's docker-registry on
127.0.0.1): publish by digest, resolve by channel, `docker pull REF@sha256:…`, run it."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bake.cli import app
from bake.targets.base import Outcome
from tests.integration.conftest import Bakes
from tests.integration.test_oci_registry import LiveRegistry, registry  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

cli = CliRunner()


def skopeo(*args: str) -> dict[str, Any]:
    out = subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


def verify_dsse_layers(repo: str, layers: list[dict[str, Any]], pub: Path, image_digest: str) -> None:
    """Every layer's envelope, fetched from the registry, verifies with securesystemslib
    under the publisher's key and is about the image."""
    sslib_dsse = pytest.importorskip("securesystemslib.dsse")
    sslib_signer = pytest.importorskip("securesystemslib.signer")
    from bake.attest.keys import load_public_key

    ours = load_public_key(pub)
    key = ours.key
    assert isinstance(key, sslib_signer.SSlibKey) and key.keyid == ours.keyid
    host, _, name = repo.partition("/")
    for layer in layers:
        url = f"http://{host}/v2/{name}/blobs/{layer['digest']}"
        with urllib.request.urlopen(url, timeout=30) as reply:
            envelope = json.loads(reply.read())
        env = sslib_dsse.Envelope.from_dict(envelope)
        assert list(env.verify([key], 1)) == [ours.keyid]
        statement = json.loads(env.payload)
        assert statement["subject"][0]["digest"]["sha256"] == image_digest.removeprefix("sha256:")


def test_oci_publish_promote_resolve_pull_run(
    context: Bakes,
    baked_web: Outcome,
    registry: LiveRegistry,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    assert cli.invoke(app, ["keygen", "--out", str(tmp_path / "k")]).exit_code == 0
    url = registry.url(f"bake{uuid.uuid4().hex[:8]}")
    env = {
        "BAKE_STATE_DIR": str(context.state),
        "DOCKER_HOST": context.engine.host,
        "BAKE_SIGNING_KEY": str(tmp_path / "k.key"),
        "BAKE_TRUST": str(tmp_path / "k.pub"),
        "BAKE_REGISTRY": url,
    }

    def ok(*args: str) -> str:
        result = cli.invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    published = json.loads(ok("publish", str(baked_web.record_path), "--json"))
    assert published["ref"].startswith(f"{registry.host}/") and "@sha256:" in published["ref"]
    ok("promote", "web@1.4.0", "stable")
    res = json.loads(ok("resolve", "web@stable", "--format", "json"))
    assert res["ref"] == published["ref"] and res["version"] == "1.4.0+1"
    tf = ok("resolve", "web@stable", "--format", "tfvars")
    assert f'image_ref = "{res["ref"]}"' in tf
    # skopeo takes the printed ref with its standard transport, and reads what bake wrote
    inspected = skopeo("inspect", "--tls-verify=false", f"docker://{res['ref']}")
    assert inspected["Digest"] == res["digest"] and res["transport_ref"] == f"docker://{res['ref']}"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{res['ref']}")
    notes = raw.get("annotations") or {}
    assert notes.get("org.opencontainers.image.version") == "1.4.0", raw
    assert notes.get("org.opencontainers.image.base.name", "").endswith("debian-base:1.0.0")
    # cosign's tag: one DSSE layer per attestation, each envelope verified by securesystemslib
    repo = res["ref"].split("@")[0]
    att_ref = f"docker://{repo}:{res['digest'].replace(':', '-')}.att"
    att = skopeo("inspect", "--raw", "--tls-verify=false", att_ref)
    layers = att["layers"]
    assert {layer["mediaType"] for layer in layers} == {"application/vnd.dsse.envelope.v1+json"}
    types = {layer["annotations"]["predicateType"] for layer in layers}
    assert types == {
        "https://slsa.dev/provenance/v1",
        "https://in-toto.io/attestation/test-result/v0.1",
        "https://cyclonedx.org/bom",
        "https://bake.invalid/attestation/file-manifest/v1",
    }
    assert published["attached"]["cosign"].startswith(f"{repo}:")
    verify_dsse_layers(repo, layers, tmp_path / "k.pub", res["digest"])
    # OCI 1.1 referrers: docker-registry 2.8 has no referrers API, so the fallback tag
    index = skopeo(
        "inspect", "--raw", "--tls-verify=false", f"docker://{repo}:{res['digest'].replace(':', '-')}"
    )
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert len(index["manifests"]) == 4
    for entry in index["manifests"]:
        referrer = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{repo}@{entry['digest']}")
        assert referrer["subject"]["digest"] == res["digest"]
        assert referrer["artifactType"] == "application/vnd.dsse.envelope.v1+json"
    # the deployer's engine pulls by digest and runs it
    context.runner(context.engine.call("pull", res["ref"]))
    out = context.runner(
        context.engine.call("run", "--rm", "--entrypoint", "cat", res["ref"], "/etc/bake-release")
    ).stdout
    assert "BAKE_RECIPE=debian-base" in out
    context.runner(context.engine.call("rmi", res["ref"], check=False))
    # revoke changes what resolve returns
    ok("revoke", "web@1.4.0+1", "--reason", "test")
    refused = cli.invoke(app, ["resolve", "web@stable"], env=env)
    assert refused.exit_code == 1 and "revoked" in refused.output
