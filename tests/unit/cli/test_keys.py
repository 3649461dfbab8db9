"""`bake keys`, `bake sign`, `bake pending` and `--sign-with` through the CLI, on a `dir:`
registry with TUF metadata: a protected channel that needs 2 of 3 keys."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from bake.attest.keys import load_signing_key, write_keypair
from bake.cli import app
from bake.registry.dirstore import DirRegistry
from tests.unit.registry.regs import Setup, publish

runner = CliRunner()


def run(env: dict[str, str], *args: str, ok: bool = True) -> Result:
    result = runner.invoke(app, list(args), env=env)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def published(tmp_path: Path) -> dict[str, str]:
    """A registry with web 1.0.0 published, and the environment of its CI."""
    ci_key, ci_pub = write_keypair(tmp_path / "ci", None)
    s = Setup(DirRegistry.at(tmp_path / "reg"), load_signing_key(ci_key, None), tmp_path)
    publish(s)
    return {
        "BAKE_REGISTRY": s.reg.url,
        "BAKE_SIGNING_KEY": str(ci_key),
        "BAKE_TRUST": str(ci_pub),
        "BAKE_STATE_DIR": str(tmp_path / "state"),
        "BAKE_KEY_PASSPHRASE": "",
    }


def test_a_protected_channel_moves_with_two_of_three_signatures(tmp_path: Path) -> None:
    env = published(tmp_path)
    ops = [write_keypair(tmp_path / f"ops{i}", None) for i in range(3)]
    key_of = [arg for _, pub in ops for arg in ("--key-of", str(pub))]
    first = ("--sign-with", str(ops[0][0]), "--sign-with", str(ops[1][0]))  # its (empty) version 1
    run(env, "keys", "protect", "prod", *key_of, "--threshold", "2", *first)
    shown = json.loads(run(env, "keys", "show", "--json").output)
    prod = next(r for r in shown["roles"] if r["role"] == "channel-prod")
    assert prod["threshold"] == 2 and len(prod["keyids"]) == 3

    moved = json.loads(
        run(env, "promote", "web@1.0.0", "prod", "--sign-with", str(ops[0][0]), "--json").output
    )
    assert moved["pending"] == ["channel-prod"]
    refused = run(env, "resolve", "web@prod", ok=False)
    assert refused.exit_code != 0 and "prod" in refused.output
    listed = json.loads(run(env, "pending", "--json").output)["pending"]
    assert [(p["role"], len(p["signed_by"]), p["threshold"]) for p in listed] == [("channel-prod", 1, 2)]
    assert "1 of 2 signatures" in run(env, "pending").output

    signed = json.loads(run(env, "sign", "channel-prod", "--sign-with", str(ops[2][0]), "--json").output)
    assert signed["pending"] == []
    assert json.loads(run(env, "resolve", "web@prod", "--format", "json").output)["version"] == "1.0.0+1"
    assert "nothing is pending" in run(env, "pending").output


def test_the_online_key_alone_leaves_a_protected_move_pending_and_it_can_be_dropped(tmp_path: Path) -> None:
    env = published(tmp_path)
    ops_key, ops_pub = write_keypair(tmp_path / "ops", None)
    protected = run(env, "keys", "protect", "prod", "--key-of", str(ops_pub))
    assert "bake sign channel-prod" in protected.output  # its first version needs the ops key
    early = run(env, "promote", "web@1.0.0", "prod", ok=False)
    assert early.exit_code == 1 and "bake sign channel-prod" in early.output, early.output
    run(env, "sign", "channel-prod", "--sign-with", str(ops_key))
    moved = run(env, "promote", "web@1.0.0", "prod")
    assert "pending" in moved.output and "bake sign channel-prod" in moved.output
    run(env, "pending", "--drop", "channel-prod")
    assert "nothing is pending" in run(env, "pending").output
    assert run(env, "resolve", "web@prod", ok=False).exit_code != 0


def test_the_root_json_keys_show_writes_is_what_a_deployer_trusts(tmp_path: Path) -> None:
    env = published(tmp_path)
    root = tmp_path / "handed-out" / "root.json"
    run(env, "keys", "show", "--root-out", str(root))
    deployer = {
        "BAKE_REGISTRY": env["BAKE_REGISTRY"],
        "BAKE_TRUST": str(root),
        "BAKE_STATE_DIR": str(tmp_path / "deploy-host"),
    }
    resolved = json.loads(run(deployer, "resolve", "web@1.0.0", "--format", "json").output)
    assert resolved["version"] == "1.0.0+1"
    # the same file with a signature gone is refused
    doc = json.loads(root.read_text())
    doc["signatures"] = []
    root.write_text(json.dumps(doc))
    fresh = {**deployer, "BAKE_STATE_DIR": str(tmp_path / "another-host")}
    refused = run(fresh, "resolve", "web@1.0.0", ok=False)
    assert refused.exit_code == 1 and "signed" in refused.output
