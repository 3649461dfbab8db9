"""The same deployer flow against a real OCI registry (Debian's docker-registry on
127.0.0.1): publish by digest, resolve by channel, `docker pull REF@sha256:…`, run it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bake.cli import app
from bake.targets.base import Outcome
from tests.integration.conftest import Bakes
from tests.integration.test_oci_registry import LiveRegistry, registry  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

cli = CliRunner()


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
