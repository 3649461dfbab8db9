"""bake.deploy.health: verify checks as a container health command, run here by /bin/sh."""

from __future__ import annotations

from pathlib import Path

import pytest

from bake.deploy import health
from bake.deploy.health import HealthSettings
from bake.errors import BakeError
from bake.infra import process
from bake.infra.process import Call
from bake.recipe.models import Check


def check(**spec: object) -> Check:
    return Check.model_validate(spec)


def run(script: str) -> process.Result:
    """The health command as Docker runs it (CMD-SHELL: /bin/sh -c)."""
    return process.run(Call(argv=("/bin/sh", "-c", script), check=False, timeout=30))


WEB = [
    check(package={"name": "nginx-light"}),
    check(command={"run": "nginx -t", "rc": 0}),
    check(port={"port": 8080}),
    check(name="serves the site", command={"run": "curl -fsS http://127.0.0.1:8080/", "stdout": "<h1>"}),
]


def test_only_port_and_command_checks_gate_a_rollout() -> None:
    gate = health.from_checks(WEB, HealthSettings(), "web@1.4.0")
    assert gate.checks == ("command nginx -t", "port 8080", "serves the site")
    assert "nginx-light" not in gate.command
    assert "1F90" in gate.command  # port 8080, as /proc/net/tcp writes it
    assert gate.probe_timeout == 3 * 3.0 + 2.0


def test_docker_args_are_the_settings_in_milliseconds() -> None:
    gate = health.from_checks(WEB, HealthSettings(interval=1.5, timeout=2, retries=4, start_period=0), "web")
    args = dict(zip(gate.docker_args()[::2], gate.docker_args()[1::2], strict=True))
    assert args == {
        "--health-cmd": gate.command,
        "--health-interval": "1500ms",
        "--health-timeout": "8000ms",
        "--health-retries": "4",
        "--health-start-period": "0ms",
    }


def test_an_image_without_a_gate_is_refused_with_what_to_do() -> None:
    with pytest.raises(BakeError, match="no port or command check") as e:
        health.from_checks([check(package={"name": "nginx-light"})], HealthSettings(), "web@1.4.0")
    assert e.value.hint is not None and "--health-cmd" in e.value.hint


def test_passing_checks_print_ok_and_exit_0() -> None:
    checks = [
        check(command={"run": "printf 'hello world'", "stdout": "lo wo"}),
        check(command={"run": "true"}),
    ]
    result = run(health.script(checks, 5))
    assert result.returncode == 0 and result.stdout.strip() == "bake-health: ok"


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"command": {"run": "exit 3"}}, "command exit 3: exit status is not 0"),
        ({"command": {"run": "echo nope", "stdout": "yes"}}, "the output lacks 'yes'"),
        ({"name": "slow", "command": {"run": "sleep 5"}}, "slow: no answer within 0.3s"),
        ({"command": {"run": "exit 1", "rc": 1}}, None),
    ],
)
def test_the_first_failure_names_its_check(spec: dict[str, object], said: str | None) -> None:
    result = run(health.script([check(**spec)], 0.3))
    if said is None:
        assert result.returncode == 0
        return
    assert result.returncode == 1
    assert health.failed_check([result.stdout]) is not None
    assert said in str(health.failed_check([result.stdout]))


def test_a_port_nobody_listens_on_fails() -> None:
    # port 1 (tcpmux) is unused on any machine that runs these tests
    result = run(health.script([check(port={"port": 1})], 1))
    assert result.returncode == 1 and "nothing listens on tcp port 1" in result.stdout
    assert run(health.script([check(port={"port": 1, "listening": False})], 1)).returncode == 0


def test_values_are_data_never_code(tmp_path: Path) -> None:
    """Titles, commands and expected output are shell-quoted: each check's command runs as
    itself, once, and nothing else does."""
    marker = tmp_path / "ran"
    evil = f"$(touch {marker})'\"`touch {marker}`"
    checks = [check(name=evil, command={"run": "printf '%s' \"it's\"", "stdout": evil})]
    result = run(health.script(checks, 5))
    assert result.returncode == 1 and not marker.exists()
    assert str(health.failed_check([result.stdout])).startswith(evil)


def test_failed_check_prefers_a_named_check_to_dockers_own_words() -> None:
    outputs = ["bake-health: FAILED: port 8080: nothing listens\n", "Health check exceeded timeout (11s)"]
    assert health.failed_check(outputs) == "port 8080: nothing listens"
    assert (
        health.failed_check(["Health check exceeded timeout (11s)"]) == "Health check exceeded timeout (11s)"
    )
    assert health.failed_check(["", "  "]) is None


def test_a_health_command_of_ones_own() -> None:
    gate = health.override("curl -fsS http://127.0.0.1/healthz", HealthSettings())
    assert gate.checks == (health.OVERRIDE,) and gate.command == "curl -fsS http://127.0.0.1/healthz"
    with pytest.raises(BakeError, match="empty"):
        health.override("  ", HealthSettings())


@pytest.mark.parametrize(
    "settings",
    [
        HealthSettings(interval=0),
        HealthSettings(timeout=4000),
        HealthSettings(retries=0),
        HealthSettings(start_period=-1),
    ],
)
def test_settings_out_of_range_are_usage_errors(settings: HealthSettings) -> None:
    with pytest.raises(BakeError) as e:
        settings.validated()
    assert e.value.exit_code == 2
