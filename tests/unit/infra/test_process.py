"""The gateway runs real (tiny) processes: these are the behaviours every caller relies on."""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.parse

import pytest

from bake.attest import filemanifest as fm
from bake.errors import BakeError, ToolError
from bake.infra import process
from bake.infra.process import Call


def test_streams_lines_and_returns_output() -> None:
    seen: list[str] = []
    result = process.run(Call(argv=("sh", "-c", "echo one; echo two")), seen.append)
    assert seen == ["one", "two"]
    assert result.stdout == "one\ntwo\n"
    assert result.returncode == 0


def test_failure_names_the_command_and_its_last_output() -> None:
    with pytest.raises(ToolError) as info:
        process.run(Call(argv=("sh", "-c", "echo doing; echo broken >&2; exit 3")))
    assert "sh exited 3: sh -c 'echo doing; echo broken >&2; exit 3'" in info.value.message
    assert "| broken" in info.value.message


def test_missing_binary_is_exit_127_with_install_hint() -> None:
    with pytest.raises(ToolError) as info:
        process.run(Call(argv=("packer-that-does-not-exist", "version")))
    assert info.value.exit_code == 127
    assert "not found" in info.value.message


def test_known_tool_hint() -> None:
    err = process.failure(Call(argv=("packer", "build")), process.Result(("packer",), 127, "", "", 0.0))
    assert err.hint is not None and "apt-get install packer" in err.hint


def test_sensitive_values_are_redacted_everywhere() -> None:
    secret = "hunter2-very-secret"
    seen: list[str] = []
    call = Call(argv=("sh", "-c", f"echo token={secret}; exit 1"), sensitive=(secret,))
    with pytest.raises(ToolError) as info:
        process.run(call, seen.append)
    assert secret not in info.value.message
    assert seen == ["token=<redacted>"]


PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIGd1bW15IGtleSBmb3IgYSB0ZXN0IG9mIHJlZGFjdGlvbg==\n"
    "-----END PRIVATE KEY-----\n"
)
CREDENTIALS = '{\n  "type": "service_account",\n  "private_key_id": "0d1f7f0c5e2b4d2aa9e8"\n}'


@pytest.mark.parametrize("secret", [PEM, CREDENTIALS], ids=["pem", "json"])
def test_every_line_of_a_multi_line_secret_is_redacted(secret: str) -> None:
    """Output is redacted line by line: a multi-line secret never appears whole in a line,
    so each of its lines must be redacted on its own, in streamed output and errors."""
    seen: list[str] = []
    script = "printf '%s' \"$S\"; printf '%s' \"$S\" >&2; exit 1"
    call = Call(argv=("sh", "-c", script), env={"S": secret}, sensitive=(secret,))
    with pytest.raises(ToolError) as info:
        process.run(call, seen.append)
    shown = "\n".join(seen) + info.value.message
    for line in secret.splitlines():
        if len(line.strip()) >= process.MIN_LINE:
            assert line.strip() not in shown
    assert "<redacted>" in shown


def test_encoded_forms_of_a_secret_are_redacted() -> None:
    secret = "hunter2/very+secret=1"
    basic = base64.b64encode(f"deploy:{secret}".encode()).decode()
    lines = [
        f"Authorization: Basic {basic}",
        f"x={base64.b64encode(secret.encode()).decode()}",
        f"u={base64.urlsafe_b64encode(('ab' + secret).encode()).decode()}",
        f"https://h/?token={urllib.parse.quote(secret, safe='')}",
        f"q={urllib.parse.quote_plus(secret)}",
        json.dumps({"key": PEM}),
    ]
    for text in lines:
        out = process.redact(text, [secret, PEM])
        assert "<redacted>" in out, text
        assert secret not in out and PEM.splitlines()[1] not in out
    assert process.redact("nothing to hide here", [secret]) == "nothing to hide here"
    assert process.redact("{ and }", [CREDENTIALS]) == "{ and }"  # short lines of a secret stay


def test_an_isolated_call_gets_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Code someone else wrote (a check from an attestation) runs in an isolated child:
    nothing of the caller's environment but PATH and the locale, plus what the call gives."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leaked-aws-secret")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/root/gcp.json")
    monkeypatch.setenv("BAKE_SIGNING_KEY", "/root/ci.key")
    monkeypatch.setenv("BAKE_KEY_PASSPHRASE", "pass")
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy:3128")
    probe = "import json, os; print(json.dumps(dict(os.environ)))"
    env = json.loads(
        process.run(Call(argv=(sys.executable, "-c", probe), env={"HOME": "/tmp/x"}, isolated=True)).stdout
    )
    assert "leaked-aws-secret" not in json.dumps(env)
    assert not {"GOOGLE_APPLICATION_CREDENTIALS", "BAKE_SIGNING_KEY", "HTTPS_PROXY"} & set(env)
    assert env["HOME"] == "/tmp/x" and env["PATH"]
    allowed = json.loads(process.run(Call(argv=(sys.executable, "-c", probe))).stdout)
    assert allowed["AWS_SECRET_ACCESS_KEY"] == "leaked-aws-secret"  # a tool call (Packer) still gets it


def test_environment_is_allow_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("SOME_RANDOM_SECRET", "x")
    env = process.child_env({"EXTRA": "1"})
    assert env["AWS_REGION"] == "eu-west-1"
    assert "SOME_RANDOM_SECRET" not in env
    assert env["EXTRA"] == "1"
    assert env["CHECKPOINT_DISABLE"] == "1"


def test_input_and_stdin_default() -> None:
    out = process.run(Call(argv=("cat",), input=b"piped\n")).stdout
    assert out == "piped\n"
    # without input, stdin is /dev/null: cat ends at once instead of hanging
    assert process.run(Call(argv=("cat",), timeout=10)).stdout == ""


def test_timeout() -> None:
    with pytest.raises(ToolError, match="timed out"):
        process.run(Call(argv=(sys.executable, "-c", "import time; time.sleep(30)"), timeout=0.5))


# --- process.stream, which the collectors read through ------------------------------------


def py(code: str, timeout: float | None = None) -> Call:
    return Call(argv=(sys.executable, "-c", code), timeout=timeout)


def test_stream_yields_stdout_as_bytes() -> None:
    with process.stream(py("import sys; sys.stdout.buffer.write(b'a\\0b' * 100000)")) as out:
        assert out.read() == b"a\0b" * 100000


def test_stream_checks_the_exit_status_when_the_block_ends() -> None:
    with (
        pytest.raises(ToolError, match="exited 3") as info,
        process.stream(py("import sys; print('no such container', file=sys.stderr); sys.exit(3)")) as out,
    ):
        out.read()
    assert "| no such container" in info.value.message


def test_a_failed_tool_is_reported_rather_than_the_readers_error() -> None:
    with (
        pytest.raises(ToolError, match="exited 1") as info,
        process.stream(py("import sys; sys.exit('boom')")) as out,
    ):
        list(fm.tar_entries(out, fm.volatile_set()))
    assert isinstance(info.value.__cause__, BakeError)


def test_a_reader_that_gives_up_does_not_hang_on_a_writing_child() -> None:
    start = time.monotonic()
    with (
        pytest.raises(ValueError, match="enough"),
        process.stream(py("import sys\nwhile True: sys.stdout.buffer.write(b'x' * 65536)")) as out,
    ):
        out.read(10)
        raise ValueError("enough")
    assert time.monotonic() - start < 10


def test_stream_timeout_kills_the_child() -> None:
    with (
        pytest.raises(ToolError, match="timed out"),
        process.stream(py("import time; time.sleep(30)", timeout=0.5)) as out,
    ):
        out.read()


def test_stream_reports_a_missing_tool() -> None:
    with (
        pytest.raises(ToolError, match="not found") as info,
        process.stream(Call(argv=("no-such-tool-bake",))),
    ):
        pass
    assert info.value.exit_code == 127
