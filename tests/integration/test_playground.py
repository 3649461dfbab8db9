"""The recipe language Ansible users reach for, and a real Ansible play, baked for docker.

One small recipe (tests/fixtures/playground) on the session's debian-base: every new
module, a loop, a handler notified twice, and an `ansible:` step running a playbook with
a local role against the build container. The files get_url downloads are served over
HTTP from this host on Docker's bridge gateway, where the build container reaches them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bake.compile import modules
from bake.errors import ToolError
from bake.infra import packer, process
from bake.infra.process import Call, LineSink, Result
from bake.plan import Plan
from bake.record import find_good
from bake.targets.base import Outcome
from bake.targets.docker import engine as docker
from bake.targets.loop import work_dir
from tests.conftest import FIXTURES, RECIPES
from tests.integration.conftest import Bakes, plan_of, require

pytestmark = pytest.mark.integration

PLAYGROUND = FIXTURES / "playground" / "playground.yaml"
SERVED = FIXTURES / "playground" / "served"
TOKEN = f"play-token-{uuid.uuid4().hex}"  # the secret; it must show up nowhere
NEW_MODULES = (
    "file",
    "lineinfile",
    "blockinfile",
    "get_url",
    "unarchive",
    "apt_repository",
    "sysctl",
    "cron",
)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@dataclass(frozen=True)
class Served:
    url: str
    requests: list[str]


def serve(address: str, folder: Path) -> Generator[Served, None, None]:
    """A local HTTP server over ``folder`` on ``address`` (stopped after)."""
    seen: list[str] = []

    class Handler(_Quiet):
        def do_GET(self) -> None:
            seen.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer((address, 0), partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://{address}:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def bridge_gateway(engine: docker.Engine) -> str:
    """Where a container reaches this host: the default bridge's gateway."""
    out = process.run(engine.call("network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}"))
    return out.stdout.strip()


@pytest.fixture(scope="module")
def served(context: Bakes) -> Iterator[Served]:
    yield from serve(bridge_gateway(context.engine), SERVED)


@dataclass
class Seen:
    """Every line Packer printed, before bake redacts anything."""

    lines: list[str]

    def runner(self, call: Call, on_line: LineSink | None = None) -> Result:
        def keep(line: str) -> None:
            self.lines.append(line)
            if on_line is not None:
                on_line(line)

        return process.run(replace(call, sensitive=()), keep)


@pytest.fixture(scope="module")
def seen() -> Seen:
    return Seen([])


@pytest.fixture(scope="module")
def playground_bakes(context: Bakes, seen: Seen) -> Bakes:
    environ = {**context.ctx.environ, "BAKE_PLAY_TOKEN": TOKEN}
    return Bakes(replace(context.ctx, environ=environ, runner=seen.runner), context.engine)


def playground_plan(info: packer.PackerInfo, served: Served, **extra: str) -> Plan:
    return plan_of(PLAYGROUND, info, extra_vars={"files_url": served.url, **extra}, search_path=[RECIPES])


@pytest.fixture(scope="module")
def baked_playground(
    playground_bakes: Bakes, packer_info: packer.PackerInfo, served: Served
) -> tuple[Outcome, float]:
    require("mmdebstrap")
    homes = set(Path("/tmp").glob("bake-ansible-*"))
    t0 = time.monotonic()
    out = playground_bakes.bake(playground_plan(packer_info, served))
    seconds = time.monotonic() - t0
    assert set(Path("/tmp").glob("bake-ansible-*")) == homes  # the runner's Ansible home is gone
    return out, seconds


def _in_image(bakes: Bakes, image: str, script: str) -> str:
    call = bakes.engine.call("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", script)
    return process.run(call).stdout


def test_playground_bakes_and_its_checks_see_every_module_and_the_play(
    baked_playground: tuple[Outcome, float], playground_bakes: Bakes, seen: Seen, served: Served
) -> None:
    out, seconds = baked_playground
    rec = out.record
    assert rec.good, rec.error
    assert rec.verify["failed"] == 0 and rec.verify["passed"] == len(rec.verify["results"])
    titles = {r["title"] for r in rec.verify["results"]}
    assert "no python3 in the image (the base had none; the play's was removed)" in titles
    assert "the handler ran once, though notified twice" in titles
    assert "/tools.tar.gz" in served.requests
    # the play ran as ansible-core does: its tasks, its role's handler and its loop
    text = "\n".join(seen.lines)
    for task in ("render the greeting", "settings in app.ini", "greeting changed", "PLAY RECAP"):
        assert task in text, task
    assert (
        "TASK [bake: python3 for the play]" in text
        and "TASK [bake: leave nothing of the play behind]" in text
    )
    # the token reached the play (its digest is in the image) ...
    digest = _in_image(playground_bakes, rec.artifact.id, "cat /etc/app-token.sha256").strip()
    assert digest == hashlib.sha256(TOKEN.encode()).hexdigest()
    print(f"playground bake: {seconds:.1f} s")


def test_the_secret_appears_in_no_output_and_no_file(
    baked_playground: tuple[Outcome, float], playground_bakes: Bakes, seen: Seen
) -> None:
    out, _ = baked_playground
    assert seen.lines and not any(TOKEN in line for line in seen.lines)  # bake's redaction was off
    needle = TOKEN.encode()
    for path in playground_bakes.state.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert needle not in path.read_bytes(), path
    # ... nor in any file of the image
    engine = playground_bakes.engine
    cid = process.run(engine.call("create", out.record.artifact.id, "/bin/true")).stdout.strip()
    try:
        export = process.run(engine.call("export", cid)).stdout  # text: the token is ASCII
        assert export and TOKEN not in export
    finally:
        process.run(engine.call("rm", "-f", cid, check=False))


def _snapshot(bakes: Bakes, cid: str) -> str:
    """Path, type, mode, owner, size, mtime and content digest of everything steps touch."""
    script = (
        "find /etc /opt /usr /var/lib /root -xdev -printf '%p %y %m %u %g %s %T@ %l\\n' | sort; "
        "find /etc /opt -xdev -type f -exec sha256sum {} + | sort"
    )
    return process.run(bakes.engine.call("exec", cid, "/bin/sh", "-c", script)).stdout


def test_every_new_module_run_twice_changes_nothing_the_second_time(
    baked_playground: tuple[Outcome, float], playground_bakes: Bakes, served: Served
) -> None:
    """Each step's script, run again in the baked image, says `ok` and changes nothing."""
    out, _ = baked_playground
    bakes = playground_bakes
    p = playground_plan(packer.detect(process.run), served)
    template = work_dir(bakes.state, p) / "template"
    engine = bakes.engine
    cid = process.run(
        engine.call("run", "-d", "--entrypoint", "/bin/sleep", out.record.artifact.id, "infinity")
    ).stdout.strip()
    try:
        before = _snapshot(bakes, cid)
        ran = []
        for script in sorted((template / "scripts").glob("*.sh")):
            module = script.stem.split("-", 1)[1]
            if module not in (*NEW_MODULES, "handler"):
                continue
            number = script.stem[:2]
            for upload in sorted((template / "files").glob(f"{number}-*")):
                if upload.is_file():
                    process.run(engine.call("cp", str(upload), f"{cid}:/tmp/bake-{upload.name}"))
            process.run(engine.call("cp", str(script), f"{cid}:/tmp/step.sh"))
            said = process.run(engine.call("exec", cid, "/bin/sh", "/tmp/step.sh")).stdout.strip()
            last = said.splitlines()[-1] if said else ""
            expected = "bake: not notified" if module == "handler" else "bake: ok"
            assert last == expected, f"{script.name} said {said!r}"
            ran.append(module)
        process.run(engine.call("exec", cid, "rm", "-f", "/tmp/step.sh"))
        assert set(ran) == {*NEW_MODULES, "handler"}
        assert _snapshot(bakes, cid) == before

        # a download that does not match its sha256 never reaches its destination
        bad = modules.get_url(
            f"{served.url}/tools.tar.gz", "/opt/bad/tools.tar.gz", "0" * 64, "0644", "root", None
        )
        result = process.run(
            engine.call("exec", cid, "/bin/sh", "-euc", "BAKE_CHANGED=0\n" + bad, check=False)
        )
        assert result.returncode == 1 and "does not have the sha256" in result.stderr
        ls = process.run(engine.call("exec", cid, "ls", "-A", "/opt/bad")).stdout
        assert ls.strip() == ""
    finally:
        process.run(engine.call("rm", "-f", cid, check=False))


def test_a_failing_task_fails_the_bake_and_names_the_task(
    baked_playground: tuple[Outcome, float],
    playground_bakes: Bakes,
    packer_info: packer.PackerInfo,
    served: Served,
) -> None:
    p = playground_plan(packer_info, served, fail_play="true")
    with pytest.raises(ToolError) as caught:
        playground_bakes.bake(p)
    msg = caught.value.message
    assert "failed at step 12 of 13 (the play)" in msg
    assert "bake: task 'a task that fails when asked to' failed on default" in msg
    assert find_good(playground_bakes.state, "playground", "docker", p.key) is None
    tags = process.run(playground_bakes.engine.call("images", "-q", f"bake/playground:key-{p.short_key}"))
    assert tags.stdout.strip() == ""


def test_an_imported_playbook_validates_and_bakes(
    playground_bakes: Bakes, packer_info: packer.PackerInfo, served: Served, tmp_path: Path
) -> None:
    """`bake import-ansible` on the 30-task playbook; the recipe it writes bakes on the
    session's debian-base, its mapped steps and its ansible step both in effect."""
    from typer.testing import CliRunner

    from bake.cli import app

    (tmp_path / "debian-base.yaml").write_bytes((RECIPES / "debian-base.yaml").read_bytes())
    out = tmp_path / "shop.yaml"
    result = CliRunner().invoke(
        app, ["import-ansible", str(FIXTURES / "import" / "shop.yml"), "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["mapped"], doc["ansible"], doc["dropped"]) == (21, 7, 2)
    t0 = time.monotonic()
    baked = playground_bakes.bake(plan_of(out, packer_info, extra_vars={"downloads_url": served.url}))
    seconds = time.monotonic() - t0
    assert baked.record.good and baked.parents[0].name == "debian-base"
    got = _in_image(
        playground_bakes,
        baked.record.artifact.id,
        "cat /etc/shop/shop.conf /etc/shop/debian-version /etc/shop/limits.conf; ls /etc/shop; "
        "stat -c '%U %a' /srv/shop; ls /srv/shop/releases; getent passwd games || echo no-games; "
        "command -v python3 || echo no-python",
    )
    for text in (
        "port = 8080",
        "log_level = info",  # lineinfile replaced the template's debug
        "release = shop-8080 on Debian",  # set_fact and a fact, in the ansible step
        "max_connections = 100",
        "reloaded",  # the handler ran
        "shop 755",
        "tool",  # downloaded, verified, unpacked
        "no-games",
        "no-python",
    ):
        assert text in got, (text, got)
    print(f"imported playbook bake: {seconds:.1f} s")
