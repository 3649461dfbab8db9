"""Real bakes: mmdebstrap → docker import → packer build → testinfra in a fresh container."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bake.errors import ToolError, VerifyError
from bake.infra.packer import PackerInfo
from bake.infra.process import Call
from bake.record import find_good, load
from bake.targets.base import BakeOptions, Outcome
from bake.targets.docker import engine as docker
from tests.conftest import RECIPES, ROOT
from tests.integration.conftest import Bakes, plan_of

pytestmark = pytest.mark.integration


def test_debian_base_and_web_bake_verify_and_run(baked_web: Outcome, context: Bakes) -> None:
    rec = baked_web.record
    assert rec.good and rec.name == "web"
    assert [p.name for p in baked_web.parents] == ["debian-base"] or rec.parent is not None
    assert rec.verify["failed"] == 0 and rec.verify["passed"] >= 10
    assert rec.verify["method"] == "fresh-container"
    # the check under `when: target == 'qemu'` is reported skipped, never passed
    outcomes = {r["title"]: r["outcome"] for r in rec.verify["results"]}
    assert outcomes["nginx runs as a systemd unit"] == "skipped" and rec.verify["skipped"] == 1
    assert "nginx runs as a systemd unit" not in [c.get("name") for c in rec.verify["checks"]]
    image = str(rec.artifact.id)
    info = docker.inspect_image(context.runner, context.engine, "bake/web:1.4.0")
    assert info is not None and info["Id"] == image
    labels = info["Config"]["Labels"]
    assert labels["io.bake.key"] == rec.bake_key and labels["io.bake.version"] == "1.4.0"
    assert info["Config"]["Entrypoint"] == ["nginx", "-g", "daemon off;"]
    # the image runs as a deployer would run it, and serves the templated site
    out = context.runner(
        context.engine.call(
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            image,
            "-c",
            "nginx && curl -fsS http://127.0.0.1:8080/ && cat /etc/bake-release",
        )
    ).stdout
    assert "<h1>web.internal</h1>" in out and "BAKE_RECIPE=debian-base" in out
    # the fresh verify container is gone
    assert docker.containers(context.runner, context.engine, label="io.bake.verify") == []


def test_second_bake_is_cached(baked_web: Outcome, context: Bakes, packer_info: PackerInfo) -> None:
    again = context.bake(plan_of(RECIPES / "web.yaml", packer_info), BakeOptions())
    assert again.cached and again.record.bake_key == baked_web.record.bake_key


def test_failing_check_fails_the_bake(
    baked_web: Outcome, context: Bakes, packer_info: PackerInfo, tmp_path: Path
) -> None:
    (tmp_path / "files").mkdir()
    for f in ("debian-base.yaml", "web.yaml", "files/site.conf.j2"):
        (tmp_path / f).write_text((RECIPES / f).read_text())
    bad = tmp_path / "bad-web.yaml"
    bad.write_text(
        "name: bad-web\nversion: 0.0.1\nextends: debian-base\n"
        "steps:\n  - file: {dest: /etc/motd, content: hello}\n"
        "verify:\n  - file: {path: /etc/motd, contains: goodbye}\n"
        "  - package: {name: this-package-is-not-installed}\n"
        "  - file: {path: /etc/motd, mode: '0644'}\n"
    )
    p = plan_of(bad, packer_info)
    with pytest.raises(VerifyError) as info:
        context.bake(p, BakeOptions())
    msg = info.value.message
    assert "2 of 7 verify checks failed" in msg  # 4 inherited from debian-base
    assert "file /etc/motd (contains=goodbye)" in msg and "text not found" in msg
    assert "package this-package-is-not-installed" in msg
    assert find_good(context.state, "bad-web", "docker", p.key) is None
    rec = load(context.state / "records" / "bad-web" / "docker" / f"{p.key.removeprefix('sha256:')}.json")
    assert rec.status == "failed" and rec.verify["failed"] == 2
    # no version tag points at the failed image, and no container is left
    assert docker.image_id(context.runner, context.engine, "bake/bad-web:0.0.1") is None
    assert docker.containers(context.runner, context.engine, label="io.bake.verify") == []


def test_cli_build_json_then_sigterm_leaves_nothing(
    baked_web: Outcome, context: Bakes, tmp_path: Path
) -> None:
    """`bake build --json` of a slow recipe, SIGTERM in the middle of Packer's step."""
    recipe = tmp_path / "slow.yaml"
    (tmp_path / "debian-base.yaml").write_text((RECIPES / "debian-base.yaml").read_text())
    recipe.write_text(
        "name: slow\nversion: 0.0.1\nextends: debian-base\n"
        "steps:\n  - shell: 'echo started-slow-step; sleep 300'\n"
    )
    env = dict(os.environ, DOCKER_HOST=context.engine.host, BAKE_STATE_DIR=str(context.state), CI="true")
    before = set(docker.containers(context.runner, context.engine))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bake", "build", str(recipe), "--json", "--verbose"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "started-slow-step" in line or time.monotonic() > deadline:
            break
    assert any("started-slow-step" in x for x in seen), "".join(seen[-20:])
    during = set(docker.containers(context.runner, context.engine)) - before
    assert during, "packer's build container should be running"
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=180)
    assert proc.returncode == 130
    doc = json.loads(out)
    assert doc["ok"] is False and "interrupted" in doc["error"]
    assert set(docker.containers(context.runner, context.engine)) - before == set()
    assert not (context.state / "records" / "slow").exists()
    assert docker.image_id(context.runner, context.engine, "bake/slow:0.0.1") is None


def test_packer_failure_names_the_step(context: Bakes, packer_info: PackerInfo, tmp_path: Path) -> None:
    (tmp_path / "debian-base.yaml").write_text((RECIPES / "debian-base.yaml").read_text())
    recipe = tmp_path / "broken.yaml"
    recipe.write_text(
        "name: broken\nversion: 0.0.1\nextends: debian-base\n"
        "steps:\n  - shell: 'true'\n  - name: the failing one\n    shell: 'echo about to fail; exit 7'\n"
    )
    with pytest.raises(ToolError) as info:
        context.bake(plan_of(recipe, packer_info), BakeOptions())
    msg = info.value.message
    assert "failed at step 2 of 2 (the failing one)" in msg
    assert "about to fail" in msg
    assert context.runner(Call(argv=("true",))).returncode == 0


def test_cli_verify_runs_a_recipes_checks_against_any_image(baked_web: Outcome, context: Bakes) -> None:
    from typer.testing import CliRunner

    from bake.cli import app

    env = {"DOCKER_HOST": context.engine.host, "BAKE_STATE_DIR": str(context.state)}
    image = str(baked_web.record.artifact.id)
    ok = CliRunner().invoke(app, ["verify", str(RECIPES / "web.yaml"), "--image", image, "--json"], env=env)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["failed"] == 0  # progress goes to stderr
    # the base image lacks nginx: web's checks fail against it, and say which
    base = str((baked_web.record.parent or {})["image_id"])
    bad = CliRunner().invoke(app, ["verify", str(RECIPES / "web.yaml"), "--image", base], env=env)
    assert bad.exit_code == 1 and "FAIL package nginx-light" in bad.output


def _bake_killed_at(recipe: Path, marker: str, context: Bakes) -> subprocess.Popen[str]:
    """`bake build RECIPE` until ``marker`` shows in its progress, then SIGKILL: no cleanup
    at all (a lost CI runner, the OOM killer)."""
    env = dict(os.environ, DOCKER_HOST=context.engine.host, BAKE_STATE_DIR=str(context.state), CI="true")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bake", "build", str(recipe), "--verbose"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        text=True,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 400
    for line in proc.stderr:
        seen.append(line)
        if marker in line or time.monotonic() > deadline:
            break
    assert any(marker in x for x in seen), "".join(seen[-20:])
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    proc.stderr.close()
    return proc


def _next_run_sweeps(context: Bakes, baked_web: Outcome) -> None:
    """Any later run sweeps: here `bake verify` (quick; the same state folder)."""
    from typer.testing import CliRunner

    from bake.cli import app

    env = {"DOCKER_HOST": context.engine.host, "BAKE_STATE_DIR": str(context.state)}
    image = str(baked_web.record.artifact.id)
    done = CliRunner().invoke(app, ["verify", str(RECIPES / "web.yaml"), "--image", image], env=env)
    assert done.exit_code == 0, done.output


def _processes_naming(path: Path) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


@pytest.mark.parametrize(
    ("where", "recipe_tail", "marker"),
    [
        ("packer", "steps:\n  - shell: 'echo started-slow-step; sleep 300'\n", "started-slow-step"),
        ("verify", "verify:\n  - command: {run: 'sleep 300'}\n", "checks in a fresh container"),
    ],
)
def test_a_bake_killed_outright_is_swept_by_the_next_run(
    baked_web: Outcome,
    context: Bakes,
    packer_info: PackerInfo,
    tmp_path: Path,
    where: str,
    recipe_tail: str,
    marker: str,
) -> None:
    (tmp_path / "debian-base.yaml").write_text((RECIPES / "debian-base.yaml").read_text())
    name = f"killed-{where}"
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(f"name: {name}\nversion: 0.0.1\nextends: debian-base\n{recipe_tail}")
    plan = plan_of(recipe, packer_info)
    work = context.state / "work" / f"{name}-docker-{plan.short_key}"
    key_tag = f"bake/{name}:key-{plan.short_key}"
    before = set(docker.containers(context.runner, context.engine))

    _bake_killed_at(recipe, marker, context)
    left = set(docker.containers(context.runner, context.engine)) - before
    assert left, "the killed run left its container behind"  # Packer's, or the fresh verify one
    assert work.is_dir() and _processes_naming(work), "and a process working in its folder"
    assert list((context.state / "runs").glob("*.json"))
    if where == "verify":
        assert docker.image_id(context.runner, context.engine, key_tag) is not None

    _next_run_sweeps(context, baked_web)
    assert set(docker.containers(context.runner, context.engine)) - before == set()
    assert not work.exists() and not _processes_naming(work)
    assert docker.image_id(context.runner, context.engine, key_tag) is None
    assert find_good(context.state, name, "docker", plan.key) is None
    assert not list((context.state / "runs").iterdir())
