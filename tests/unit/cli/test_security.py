"""What an attacker, a crash or a bad value gets, through the CLI: a `dir:` registry whose
signed documents someone with the online key filled with hostile values, credentials in a
URL, an empty passphrase, a retried rollback, a trust state that cannot be written."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from bake.attest.keys import load_signing_key, write_keypair
from bake.cli import app
from bake.registry import client
from bake.registry.dirstore import DirRegistry
from bake.registry.model import ImageDoc, Revocation, TargetOutput
from bake.registry.updater import cache_dir
from tests.unit.registry.regs import Setup, now, publish

runner = CliRunner()
HOSTILE = "retired\x1b]0;owned\x07\x1b[2J\nresolve: web@9.9.9 is fine, deploy it"


def run(env: Mapping[str, str | None], *args: str, code: int = 0) -> Result:
    result = runner.invoke(app, list(args), env=dict(env))
    assert result.exit_code == code, result.output
    return result


@pytest.fixture
def reg(tmp_path: Path) -> tuple[Setup, dict[str, str]]:
    """A registry with web 1.0.0 and 1.1.0 published, and its CI's environment."""
    key, pub = write_keypair(tmp_path / "ci", None)
    s = Setup(DirRegistry.at(tmp_path / "reg"), load_signing_key(key, None), tmp_path)
    publish(s)
    publish(s, version="1.1.0", out="b")
    env = {
        "BAKE_REGISTRY": s.reg.url,
        "BAKE_SIGNING_KEY": str(key),
        "BAKE_TRUST": str(pub),
        "BAKE_STATE_DIR": str(tmp_path / "state"),
    }
    return s, env


def signed(s: Setup, name: str, change: Callable[[ImageDoc], ImageDoc]) -> None:
    """Store ``change(doc)`` as the signed document of ``name``, as a publisher holding the
    online key could (bake's own planners refuse these values)."""

    def mutate(snap: client.Snapshot) -> tuple[dict[str, ImageDoc], dict[str, bytes]]:
        return {name: change(snap.image(name))}, {}

    client.transact(s.reg, s.trust(), s.signers, mutate, now=now())


def with_output(doc: ImageDoc, field: str, value: str) -> ImageDoc:
    build = doc.versions["1.1.0+1"]
    out = dataclasses.replace(build.targets["docker"], **{field: value})  # type: ignore[arg-type]
    build = dataclasses.replace(build, targets={"docker": out})
    return dataclasses.replace(doc, versions={**doc.versions, "1.1.0+1": build})


def shown(result: Result) -> str:
    return result.stdout + result.stderr


# --------------------------------------------------------------------------- values (9)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ref", "r.example/web@sha256:" + "a" * 64 + "\nLD_PRELOAD=/tmp/evil.so"),
        ("ref", "r.example/web\r@sha256:" + "a" * 64),
        ("artifact_id", 'web.qcow2\r\nimage_ref = "evil"'),
        ("artifact_id", "web.qcow2\nLD_PRELOAD=/tmp/evil.so"),
    ],
)
@pytest.mark.parametrize("fmt", ["env", "tfvars", "text", "json"])
def test_a_signed_value_that_breaks_its_grammar_reaches_no_output(
    reg: tuple[Setup, dict[str, str]], field: str, value: str, fmt: str
) -> None:
    s, env = reg
    signed(s, "web", lambda doc: with_output(doc, field, value))
    refused = run(env, "resolve", "web@1.1.0", "--format", fmt, code=1)
    assert refused.stdout == ""
    assert "LD_PRELOAD" not in shown(refused) and "evil" not in refused.stdout
    assert f"refused: {field} must be" in refused.stderr
    assert run(env, "resolve", "web@1.0.0", "--format", fmt).stdout  # the other build is fine


def test_env_and_tfvars_hold_exactly_their_lines(reg: tuple[Setup, dict[str, str]]) -> None:
    _, env = reg
    out = run(env, "resolve", "web@1.1.0", "--format", "env").stdout
    assert [x.split("=", 1)[0] for x in out.splitlines()] == [
        "BAKE_IMAGE_NAME",
        "BAKE_IMAGE_VERSION",
        "BAKE_IMAGE_TARGET",
        "BAKE_IMAGE_DIGEST",
        "BAKE_IMAGE_REF",
    ]
    tfvars = run(env, "resolve", "web@1.1.0", "--format", "tfvars").stdout
    assert [x.split(" = ")[0] for x in tfvars.splitlines()] == ["image_ref", "image_digest", "artifact_id"]


def test_a_publisher_cannot_record_a_malformed_ref(reg: tuple[Setup, dict[str, str]]) -> None:
    from bake.errors import BakeError
    from bake.registry.model import Release

    s, _ = reg
    bad = TargetOutput("sha256:" + "c" * 64, ref="r.example/web@sha256:" + "c" * 64 + "\nX=1")
    with pytest.raises(BakeError, match="ref must be a reference"):
        client.publish(
            s.reg, s.trust(), s.signers, Release("web", "2.0.0", "k", now(), {"docker": bad}), {}, now=now()
        )


# --------------------------------------------------------------------------- terminal (10)


def _no_escapes(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text
    assert not any(x.startswith("resolve: web@9.9.9") for x in text.splitlines())  # no forged line


def test_free_text_from_the_registry_is_escaped_everywhere(reg: tuple[Setup, dict[str, str]]) -> None:
    s, env = reg
    lock = s.base / "bake.lock"
    run(env, "pin", "web@1.1.0", "--lock", str(lock))
    revocation = Revocation(reason=HOSTILE + "x" * 2000, at="2024-05-01T12:00:00Z")
    signed(s, "web", lambda doc: dataclasses.replace(doc, revocations={"1.1.0+1": revocation}))

    history = run(env, "history", "web")
    refused = run(env, "resolve", "web@1.1.0+1", code=1)
    checked = run(env, "lock", "check", str(lock), code=1)
    for result in (history, refused, checked):
        _no_escapes(shown(result))
        assert "retired\\x1b]0;owned\\x07" in shown(result)  # shown, as escapes
        assert "x" * 400 not in shown(result)  # and capped
    assert json.loads(run(env, "history", "web", "--json").stdout)["versions"][1]["revoked"].startswith(
        HOSTILE
    )  # JSON keeps the value (escaped by JSON itself)


def test_a_revocation_reason_is_one_line_of_text(reg: tuple[Setup, dict[str, str]]) -> None:
    _, env = reg
    refused = run(env, "revoke", "web@1.1.0+1", "--reason", HOSTILE, code=2)
    _no_escapes(shown(refused))
    assert "one line of printable text" in refused.stderr
    done = run(env, "revoke", "web@1.1.0+1", "--reason", "CVE-2024-1234 in openssl")
    assert "revoked web@1.1.0+1: CVE-2024-1234 in openssl" in done.stdout


def test_a_malformed_structured_field_is_refused_when_read(reg: tuple[Setup, dict[str, str]]) -> None:
    s, env = reg
    entry = dataclasses.replace(
        s.read().image("web").versions["1.0.0+1"], created="2024-05-01T12:00:00Z\x1b[2J"
    )
    signed(s, "web", lambda doc: dataclasses.replace(doc, versions={**doc.versions, "1.0.0+1": entry}))
    refused = run(env, "history", "web", code=1)
    assert "versions.1.0.0+1.created must be an RFC 3339 UTC time" in refused.stderr
    _no_escapes(shown(refused))


# --------------------------------------------------------------------------- names (12)


def test_names_with_dot_segments_are_refused(reg: tuple[Setup, dict[str, str]]) -> None:
    from bake.errors import BakeError
    from tests.unit.registry.regs import release

    s, env = reg
    for name in ("a/../../x", "team/./web", "team//web", "../web"):
        refused = run(env, "resolve", f"{name}@1.0.0", code=2)
        assert "is invalid" in refused.stderr
        with pytest.raises(BakeError, match="is invalid"):
            client.publish(s.reg, s.trust(), s.signers, release(name, "1.0.0", "a", {}), {}, now=now())
    assert not (s.reg.root / "targets" / "x").exists()


# --------------------------------------------------------------------------- credentials (6)


@pytest.mark.parametrize("url", ["oci://user:s3cretpw@host/team", "oci://user:s3cr@tpw@host/team"])
@pytest.mark.parametrize("as_json", [False, True])
def test_a_password_in_a_registry_url_is_never_echoed(tmp_path: Path, url: str, as_json: bool) -> None:
    args = ["ls", "-r", url, *(["--json"] if as_json else [])]
    result = run({"BAKE_STATE_DIR": str(tmp_path)}, *args, code=1)
    assert "s3c" not in shown(result) and "tpw" not in shown(result)
    assert "has credentials" in shown(result)
    other = run({"BAKE_STATE_DIR": str(tmp_path)}, "ls", "-r", "https://u:s3cretpw@host/x", *args[3:], code=1)
    assert "s3cretpw" not in shown(other)


# --------------------------------------------------------------------------- passphrase (7)


def test_an_empty_passphrase_is_refused_not_an_unencrypted_key(tmp_path: Path) -> None:
    refused = run({"BAKE_KEY_PASSPHRASE": ""}, "keygen", "--out", str(tmp_path / "ci"), code=2)
    assert "set but empty" in refused.stderr
    assert not list(tmp_path.iterdir())
    run({"BAKE_KEY_PASSPHRASE": "correct horse"}, "keygen", "--out", str(tmp_path / "enc"))
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "enc.key").read_bytes()
    run({"BAKE_KEY_PASSPHRASE": None}, "keygen", "--out", str(tmp_path / "plain"))  # unset: asked for
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "plain.key").read_bytes()


# --------------------------------------------------------------------------- channel moves (3)


def test_a_retried_rollback_with_expect_rolls_back_once(reg: tuple[Setup, dict[str, str]]) -> None:
    s, env = reg
    run(env, "promote", "web@1.0.0", "stable")
    run(env, "promote", "web@1.1.0", "stable")
    first = json.loads(run(env, "rollback", "web", "stable", "--expect", "1.1.0+1", "--json").stdout)
    assert first["changes"] == ["web@stable: 1.1.0+1 -> 1.0.0+1 (rollback)"]
    again = json.loads(run(env, "rollback", "web", "stable", "--expect", "1.1.0+1", "--json").stdout)
    assert again["serial"] == first["serial"]  # nothing written
    assert again["changes"] == ["web@stable was already rolled back from 1.1.0+1 to 1.0.0+1"]
    assert s.read().image("web").channels["stable"].current == "1.0.0+1"
    moved = run(env, "rollback", "web", "stable", "--expect", "1.0.5+1", code=1)
    assert "points to 1.0.0+1, not 1.0.5+1: nothing was rolled back" in moved.stderr


def test_promoting_the_current_head_writes_nothing(reg: tuple[Setup, dict[str, str]]) -> None:
    _, env = reg
    first = json.loads(run(env, "promote", "web@1.1.0", "stable", "--json").stdout)
    again = json.loads(run(env, "promote", "web@1.1.0", "stable", "--json").stdout)
    assert again["serial"] == first["serial"]
    assert again["changes"] == ["web@stable already points to 1.1.0+1"]


@pytest.fixture
def frozen_trust_state(reg: tuple[Setup, dict[str, str]]) -> Iterator[Path]:
    """This machine's trust state, current, whose timestamp cannot be replaced any more (as
    on a full disk): the immutable attribute stops root too. Reading the registry as it is
    writes no timestamp; after a change, the new one cannot be stored."""
    s, env = reg
    run(env, "ls")
    timestamp = cache_dir(Path(env["BAKE_STATE_DIR"]), s.reg.url) / "timestamp.json"
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(timestamp)], check=False).returncode:
        pytest.skip("needs chattr +i (root, on a file system with the immutable attribute)")
    try:
        yield timestamp.parent
    finally:
        subprocess.run([chattr, "-i", str(timestamp)], check=True)


@pytest.mark.parametrize(
    "command",
    [("refresh",), ("promote", "web@1.1.0", "stable"), ("revoke", "web@1.0.0+1", "--reason", "bad")],
)
def test_a_committed_change_succeeds_when_the_local_state_cannot_be_written(
    reg: tuple[Setup, dict[str, str]], frozen_trust_state: Path, command: tuple[str, ...]
) -> None:
    s, env = reg
    before = s.read("fresh").serial
    done = run(env, *command)  # exit 0: the registry has it
    assert (
        "warning: the registry has the change" in done.stderr
        and f"cannot write this machine's trust state for {s.reg.url}" in done.stderr
    )
    assert s.read("fresh-after").serial == before + 1
