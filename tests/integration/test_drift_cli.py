"""`bake drift` end to end: publish web, run it, change it, and see each change named."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bake.cli import app
from bake.infra.fsutil import write_json
from bake.targets.base import Outcome
from bake.targets.docker import engine as docker
from tests.integration.conftest import Bakes

pytestmark = pytest.mark.integration

cli = CliRunner()


def test_drift_clean_then_each_change_named(context: Bakes, baked_web: Outcome, tmp_path: Path) -> None:
    assert cli.invoke(app, ["keygen", "--out", str(tmp_path / "k")]).exit_code == 0
    env = {
        "BAKE_STATE_DIR": str(context.state),
        "DOCKER_HOST": context.engine.host,
        "BAKE_SIGNING_KEY": str(tmp_path / "k.key"),
        "BAKE_TRUST": str(tmp_path / "k.pub"),
        "BAKE_REGISTRY": f"dir:{tmp_path / 'registry'}",
    }
    published = cli.invoke(app, ["publish", str(baked_web.record_path), "--json"], env=env)
    assert published.exit_code == 0, published.output
    digest = json.loads(published.output)["digest"]
    image = str(baked_web.record.artifact.id)
    cid = docker.run_detached(context.runner, context.engine, image, "bake-drift-test")
    try:
        clean = cli.invoke(app, ["drift", "web@1.4.0", "--host", f"docker://{cid}", "--json"], env=env)
        assert clean.exit_code == 0, clean.output
        doc = json.loads(clean.output)
        assert doc["ok"] and doc["checks"]["failed"] == 0 and doc["files"]["clean"]
        for cmd in (
            "echo tampered >> /etc/nginx/conf.d/site.conf",
            "echo new > /etc/added-by-hand",
            "chmod 0600 /etc/bake-release",
            "apt-get update -q && apt-get install -y -q --no-install-recommends less",
        ):
            context.runner(context.engine.call("exec", cid, "sh", "-c", cmd))
        drifted = cli.invoke(app, ["drift", f"web@sha256:{digest.removeprefix('sha256:')}",
                                   "--host", f"docker://{cid}"], env=env)  # fmt: skip
        assert drifted.exit_code == 1, drifted.output
        out = drifted.output
        assert "/etc/nginx/conf.d/site.conf" in out
        assert "/etc/added-by-hand" in out
        assert "/etc/bake-release" in out
        assert "/usr/bin/less" in out
        assert "DRIFTED" in out
    finally:
        docker.remove_container(context.runner, context.engine, cid)
    # a tampered manifest attestation is refused
    reg = tmp_path / "registry"
    files = json.loads(published.output)["attestations"]["files"].removeprefix("sha256:")
    (blob,) = (reg / "targets" / "attestations" / "web").glob(f"*/{files}.files.json")
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.write_bytes(bytes(data))
    refused = cli.invoke(app, ["drift", "web@1.4.0", "--host", "docker://nothing"], env=env)
    assert refused.exit_code == 1 and "tampered" in refused.output


SNOOP = """\
import os
leaked = sorted(k for k in os.environ if k.startswith(("AWS_", "BAKE_", "GOOGLE_")))
assert not leaked, f"this check can read {leaked}"
assert host.file("/etc/bake-release").exists
"""


def test_drift_runs_an_attestations_python_only_when_allowed_and_never_with_credentials(
    context: Bakes, baked_web: Outcome, tmp_path: Path
) -> None:
    """The image's test-result carries a raw `testinfra:` check (Python, run on this machine)
    that looks for the operator's credentials: drift skips it unless allowed, and when
    allowed it runs in a child that has none of them."""
    assert (
        cli.invoke(app, ["keygen", "--out", str(tmp_path / "k")], env={"BAKE_KEY_PASSPHRASE": None}).exit_code
        == 0
    )
    env = {
        "BAKE_STATE_DIR": str(context.state),
        "DOCKER_HOST": context.engine.host,
        "BAKE_SIGNING_KEY": str(tmp_path / "k.key"),
        "BAKE_TRUST": str(tmp_path / "k.pub"),
        "BAKE_REGISTRY": f"dir:{tmp_path / 'registry'}",
    }
    rec = baked_web.record
    checks = [*rec.verify["checks"], {"name": "snoop", "testinfra": SNOOP}]
    record = tmp_path / "web-with-snoop.json"
    write_json(record, dataclasses.replace(rec, verify={**rec.verify, "checks": checks}).to_json())
    assert cli.invoke(app, ["publish", str(record)], env=env).exit_code == 0
    cid = docker.run_detached(context.runner, context.engine, str(rec.artifact.id), "bake-drift-snoop")
    secrets = {"AWS_SECRET_ACCESS_KEY": "leaked-aws-secret", "AWS_ACCESS_KEY_ID": "AKIALEAKED"}
    try:
        held = cli.invoke(
            app, ["drift", "web@1.4.0", "--host", f"docker://{cid}", "--json"], env={**env, **secrets}
        )
        assert held.exit_code == 0, held.output
        results = {r["title"]: r for r in json.loads(held.stdout)["checks"]["results"]}
        assert (
            results["snoop"]["outcome"] == "skipped"
            and "--allow-python-checks" in results["snoop"]["message"]
        )
        assert results["package nginx-light"]["outcome"] == "passed"  # declarative checks always run
        text = cli.invoke(app, ["drift", "web@1.4.0", "--host", f"docker://{cid}"], env={**env, **secrets})
        assert "1 skipped (raw Python checks need --allow-python-checks)" in text.stdout

        args = ["drift", "web@1.4.0", "--host", f"docker://{cid}", "--allow-python-checks", "--json"]
        allowed = cli.invoke(app, args, env={**env, **secrets})
        assert allowed.exit_code == 0, allowed.output  # the snoop ran and found nothing
        results = {r["title"]: r for r in json.loads(allowed.stdout)["checks"]["results"]}
        assert results["snoop"]["outcome"] == "passed", results["snoop"]
    finally:
        docker.remove_container(context.runner, context.engine, cid)
