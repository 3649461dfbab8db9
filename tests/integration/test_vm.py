"""Real VM bakes: mmdebstrap → ext4 disk → packer (qemu) → boot the final qcow2 → testinfra.

Under software emulation (this CI machine's KVM cannot boot kernels) a boot takes about a
minute, so the module bakes debian-base and web once (web builds on debian-base's disk)
and every other test reuses them. Afterwards no QEMU process and no temporary disk remain,
SIGTERM included.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bake.attest.digest import sha256_file
from bake.cli import app
from bake.errors import VerifyError
from bake.infra import packer, process
from bake.plan import Plan, plan_recipe
from bake.record import find_good, load, record_path
from bake.registry import client
from bake.registry.backend import open_registry
from bake.targets import loop
from bake.targets.base import BakeContext, BakeOptions, Outcome
from bake.targets.qemu import Qemu
from bake.targets.qemu import machine as vm
from bake.targets.qemu.session import QemuSession
from bake.ui.progress import PlainReporter
from tests.conftest import RECIPES, ROOT
from tests.integration.conftest import environ, require
from tests.integration.test_oci_registry import LiveRegistry, registry  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
cli = CliRunner()


def qemu_plan(path: Path, info: packer.PackerInfo) -> Plan:
    (p,) = plan_recipe(path, info, targets=["qemu"])
    return p


def ours(state: Path) -> list[str]:
    """Command lines of live processes that are QEMU on our disks or bake's SSH connections."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (str(state) in cmd and "qemu-system" in cmd) or (cmd.startswith("ssh") and "bake-ssh-" in cmd):
            found.append(cmd)
    return found


def ssh_dirs() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("bake-ssh-*")}


def leftover_disks(state: Path) -> list[Path]:
    """Disk files that are not a kept base disk or a good bake's disk."""
    kept = set(state.glob("vm-bases/*/disk.qcow2")) | set(state.glob("images/qemu/*/*/*.qcow2"))
    kept |= set(state.glob("published/*/*.qcow2"))  # parents fetched from a registry
    disks = [p for pat in ("**/*.qcow2", "**/*.raw", "**/*.img") for p in state.glob(pat)]
    return [p for p in disks if p not in kept and p.name != "initrd.img"]


def assert_nothing_left(state: Path, ssh_before: set[str]) -> None:
    assert ours(state) == []
    assert leftover_disks(state) == []
    assert list(state.glob("work/*/output")) == []
    assert ssh_dirs() - ssh_before == set()


@pytest.fixture(scope="module")
def vm_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bake-vm-state")


@pytest.fixture(scope="module")
def ssh_before() -> set[str]:
    return ssh_dirs()


@pytest.fixture(scope="module")
def vm_ctx(vm_state: Path) -> BakeContext:
    require("packer", "mmdebstrap", "qemu-system-x86_64", "qemu-img", "mkfs.ext4", "ssh")
    return BakeContext(
        runner=process.run, state=vm_state, reporter=PlainReporter(), environ=environ(vm_state)
    )


def bake_vm(ctx: BakeContext, plan: Plan, opts: BakeOptions | None = None) -> Outcome:
    with process.terminate_as_interrupt():
        return loop.bake(Qemu(), QemuSession(ctx), ctx, plan, opts or BakeOptions())


@pytest.fixture(scope="module")
def info() -> packer.PackerInfo:
    require("packer")
    return packer.detect(process.run)


@pytest.fixture(scope="module")
def baked_vm_web(vm_ctx: BakeContext, info: packer.PackerInfo) -> Outcome:
    """debian-base (from mmdebstrap) and web, baked as qcow2 and verified by booting them."""
    return bake_vm(vm_ctx, qemu_plan(RECIPES / "web.yaml", info))


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "debian-base.yaml").write_text((RECIPES / "debian-base.yaml").read_text())
    yield tmp_path


def test_debian_base_and_web_boot_and_pass_their_checks(
    baked_vm_web: Outcome, vm_ctx: BakeContext, ssh_before: set[str]
) -> None:
    rec = baked_vm_web.record
    assert rec.good and rec.name == "web" and rec.target == "qemu"
    assert [p.name for p in baked_vm_web.parents] == ["debian-base"]
    base = baked_vm_web.parents[0]
    assert base.verify["method"] == "booted-vm" and base.verify["failed"] == 0 and base.verify["passed"] == 4
    assert rec.verify["method"] == "booted-vm" and rec.verify["failed"] == 0 and rec.verify["passed"] == 13
    # in a booted VM the services really run: nginx was enabled, so it serves after boot
    outcomes = {r["title"]: r["outcome"] for r in rec.verify["results"]}
    assert [o for t, o in outcomes.items() if t.startswith("service nginx")] == ["passed"]
    assert outcomes["port 8080"] == "passed" and outcomes["serves the site"] == "passed"
    # the check under `when: target == 'qemu'` runs here (it is skipped for docker)
    assert outcomes["nginx runs as a systemd unit"] == "passed" and rec.verify["skipped"] == 0
    assert len(rec.verify["checks"]) == 13  # carried to the test-result attestation, for drift
    art = Qemu().artifact_to_json(rec.artifact)  # as the record stores it
    assert art["type"] == "qcow2" and art["boot"] == "direct-kernel"
    # what the verified VM showed, for the SBOM and the drift manifest a publish signs
    assert "Package: nginx-light" in Path(art["dpkg_status"]).read_text()
    manifest = json.loads(Path(art["file_manifest"]).read_text())
    paths = {e["path"] for e in manifest["entries"]}
    assert "/etc/nginx/conf.d/site.conf" in paths and "/etc/machine-id" not in paths
    disk = Path(art["path"])
    assert art["digest"] == sha256_file(disk) and art["size"] == disk.stat().st_size
    for part in ("kernel", "initrd"):
        assert sha256_file(Path(art[part]["path"])) == art[part]["digest"]
    assert rec.parent is not None and rec.parent["digest"] == base.artifact.digest
    # a standalone, compacted qcow2 of the recipe's size (not an overlay on its parent)
    doc = json.loads(process.run(process.Call(argv=("qemu-img", "info", "--output=json", str(disk)))).stdout)
    assert doc["format"] == "qcow2" and "backing-filename" not in doc
    assert doc["virtual-size"] == vm.size_bytes("3G")
    assert disk.stat().st_size < 1 << 30
    for phase in ("packer_boot", "packer_steps", "packer_shutdown", "packer_compaction", "verify_boot"):
        assert rec.timings[phase] > 0, phase
    assert base.timings["base_disk"] > 0
    assert_nothing_left(vm_ctx.state, ssh_before)


def test_cli_verify_boots_any_qcow2_with_its_kernel_beside_it(
    baked_vm_web: Outcome, vm_ctx: BakeContext
) -> None:
    """`bake verify -t qemu --image DISK`: a fresh VM of a disk given by path."""
    disk = baked_vm_web.record.artifact.files["disk"].path  # vmlinuz and initrd.img beside it
    env = {"BAKE_STATE_DIR": str(vm_ctx.state), "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    args = ["verify", str(RECIPES / "web.yaml"), "-t", "qemu", "--image", str(disk), "--json"]
    result = cli.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["method"] == "booted-vm" and report["failed"] == 0 and report["passed"] == 13


def test_second_bake_is_cached(baked_vm_web: Outcome, vm_ctx: BakeContext, info: packer.PackerInfo) -> None:
    again = bake_vm(vm_ctx, qemu_plan(RECIPES / "web.yaml", info))
    assert again.cached and again.record.bake_key == baked_vm_web.record.bake_key


def test_failing_check_fails_the_bake_and_deletes_the_disk(
    baked_vm_web: Outcome,
    vm_ctx: BakeContext,
    info: packer.PackerInfo,
    recipe_dir: Path,
    ssh_before: set[str],
) -> None:
    bad = recipe_dir / "bad-vm.yaml"
    bad.write_text(
        "name: bad-vm\nversion: 0.0.1\nextends: debian-base\ntargets: {qemu: {}}\n"
        "steps:\n  - file: {dest: /etc/motd, content: hello}\n"
        "verify:\n  - file: {path: /etc/motd, contains: goodbye}\n"
        "  - service: {name: ssh, running: true}\n"
    )
    p = qemu_plan(bad, info)
    with pytest.raises(VerifyError) as caught:
        bake_vm(vm_ctx, p)
    msg = caught.value.message
    assert "1 of 6 verify checks failed" in msg  # 4 inherited from debian-base
    assert "file /etc/motd (contains=goodbye)" in msg and "text not found" in msg
    assert find_good(vm_ctx.state, "bad-vm", "qemu", p.key) is None
    rec = load(vm_ctx.state / "records" / "bad-vm" / "qemu" / f"{p.key.removeprefix('sha256:')}.json")
    assert rec.status == "failed" and rec.verify["failed"] == 1 and rec.verify["passed"] == 5
    assert not list(vm_ctx.state.glob("images/qemu/bad-vm/*/*.qcow2"))
    assert_nothing_left(vm_ctx.state, ssh_before)


_BAKE_SCRIPT = """
import sys
from pathlib import Path
from bake.infra import packer
from bake.infra import process
from bake.errors import BakeError
from bake.plan import plan_recipe
from bake.targets import loop
from bake.targets.base import BakeContext
from bake.targets.qemu import Qemu
from bake.targets.qemu.session import QemuSession
from bake.ui.progress import PlainReporter
state = Path(sys.argv[2])
(p,) = plan_recipe(Path(sys.argv[1]), packer.detect(process.run), targets=["qemu"])
env = {"PACKER_TMP_DIR": str(state / "packer-tmp")}
ctx = BakeContext(process.run, state, PlainReporter(verbose=True), env)
try:
    with process.terminate_as_interrupt():
        loop.bake(Qemu(), QemuSession(ctx), ctx, p)
except BakeError as exc:
    print(exc.message, file=sys.stderr, flush=True)
    sys.exit(exc.exit_code)
"""

_VERIFY_SCRIPT = """
import sys
from pathlib import Path
from bake.infra import process
from bake.targets.qemu import machine as vm
from bake.errors import BakeError
from bake.targets.qemu.verify import verify_vm_disk
d = Path(sys.argv[1])
boot = vm.BootFiles(d / "debian-base.qcow2", d / "vmlinuz", d / "initrd.img")
try:
    with process.terminate_as_interrupt():
        verify_vm_disk(process.run, process.spawn, boot, vm.Machine(), "debian-base", (), Path(sys.argv[2]))
except BakeError as exc:
    print(exc.message, file=sys.stderr, flush=True)
    sys.exit(exc.exit_code)
"""


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        text=True,
    )


def test_sigterm_during_a_step_leaves_no_vm_and_no_disk(
    baked_vm_web: Outcome, vm_ctx: BakeContext, recipe_dir: Path, ssh_before: set[str]
) -> None:
    slow = recipe_dir / "slow-vm.yaml"
    slow.write_text(
        "name: slow-vm\nversion: 0.0.1\nextends: debian-base\ntargets: {qemu: {}}\n"
        "steps:\n  - shell: 'echo started-slow-step; sleep 600'\n"
    )
    proc = _python(_BAKE_SCRIPT, str(slow), str(vm_ctx.state))
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 600
    for line in proc.stderr:
        seen.append(line)
        if "started-slow-step" in line or time.monotonic() > deadline:
            break
    assert any("started-slow-step" in x for x in seen), "".join(seen[-30:])
    assert any("qemu-system" in c for c in ours(vm_ctx.state)), "Packer's VM should be running"
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert not (vm_ctx.state / "records" / "slow-vm").exists()
    assert_nothing_left(vm_ctx.state, ssh_before)


def test_sigterm_while_verifying_leaves_no_vm_and_no_overlay(
    baked_vm_web: Outcome, vm_ctx: BakeContext, tmp_path: Path, ssh_before: set[str]
) -> None:
    folder = baked_vm_web.parents[0].artifact.files["disk"].path.parent
    work = vm_ctx.state / "work" / "sigterm-verify"
    proc = _python(_VERIFY_SCRIPT, str(folder), str(work))
    deadline = time.monotonic() + 60
    while not any("qemu-system" in c for c in ours(vm_ctx.state)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (work / "vm" / "overlay.qcow2").is_file(), "the verify VM should be booting"
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert not (work / "vm" / "overlay.qcow2").exists()
    assert_nothing_left(vm_ctx.state, ssh_before)


# --- publish and fetch: the deployer's side of a VM image -------------------------------


def _cli_env(vm_state: Path, keys: Path, url: str) -> dict[str, str]:
    return {
        "BAKE_STATE_DIR": str(vm_state),
        "BAKE_SIGNING_KEY": str(keys / "ci.key"),
        "BAKE_TRUST": str(keys / "ci.pub"),
        "BAKE_REGISTRY": url,
        "BAKE_KEY_PASSPHRASE": "",
        "PACKER_TMP_DIR": str(vm_state / "packer-tmp"),
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",  # VMs need no Docker engine
    }


def _ok(env: Mapping[str, str | None], *args: str) -> str:
    """stdout alone: progress goes to stderr, the --json document to stdout."""
    result = cli.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("vm-keys")
    _ok({"BAKE_KEY_PASSPHRASE": None}, "keygen", "--out", str(folder / "ci"))  # unset: no passphrase
    return folder


def _fetch_and_check(env: dict[str, str], rec: dict[str, object], out: Path) -> dict[str, object]:
    art = rec["artifact"]
    assert isinstance(art, dict)
    got = json.loads(_ok(env, "fetch", "web@stable", "-o", str(out), "--json"))
    assert sha256_file(out) == art["digest"] == got["digest"]
    assert sha256_file(out.with_name("web.vmlinuz")) == art["kernel"]["digest"]
    assert sha256_file(out.with_name("web.initrd.img")) == art["initrd"]["digest"]
    return dict(got)


def test_bake_build_publishes_the_vm_and_fetch_returns_its_verified_bytes(
    baked_vm_web: Outcome, vm_state: Path, keys: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "registry"
    env = _cli_env(vm_state, keys, f"dir:{folder}")
    # the CLI finds the verified bake of this key and publishes it (its parent first)
    web = str(RECIPES / "web.yaml")
    no_registry = {k: v for k, v in env.items() if k != "BAKE_REGISTRY"}
    doc = json.loads(_ok(no_registry, "build", web, "-t", "qemu", "--offline", "--json"))
    assert doc["cached"] is True and doc["published"] is None
    args = ("build", web, "-t", "qemu", "--offline", "--registry", f"dir:{folder}", "--json")
    doc = json.loads(_ok(env, *args))
    assert doc["published"]["digest"] == baked_vm_web.record.artifact.digest
    assert set(doc["published"]["attestations"]) == {"provenance", "test-result", "sbom", "files"}
    assert "debian-base" in _ok(env, "ls")
    _ok(env, "promote", "web@latest", "stable")
    # the SBOM lists what the booted, verified VM had installed
    sbom_hex = doc["published"]["attestations"]["sbom"][7:]
    (sbom_file,) = (folder / "targets" / "attestations" / "web").glob(f"*/{sbom_hex}.sbom.json")
    sbom = json.loads(sbom_file.read_text())
    statement = json.loads(base64.b64decode(sbom["payload"]))
    names = {c["name"] for c in statement["predicate"]["components"]}
    assert {"nginx-light", "linux-image-amd64", "openssh-server"} <= {n.split(":")[0] for n in names}
    assert [s["name"] for s in statement["subject"]] == ["web.disk", "web.kernel", "web.initrd"]
    # read in the verified VM too: its distro, machine-readable copyright files, the disk itself
    bom = statement["predicate"]
    assert all("distro=debian-12" in c["purl"] for c in bom["components"])
    assert sum(1 for c in bom["components"] if c.get("licenses")) > len(bom["components"]) // 2
    top = bom["metadata"]["component"]
    assert top["type"] == "operating-system" and top["purl"].startswith(
        "pkg:generic/web@1.4.0?checksum=sha256:"
    )

    got = _fetch_and_check(env, baked_vm_web.record.to_json(), tmp_path / "deploy" / "web.qcow2")
    assert "-kernel" in str(got["boot"])
    # a republish of the same bake key uploads nothing and adds no version
    again = json.loads(_ok(env, "publish", str(baked_vm_web.record_path), "--json"))
    assert again["created"] is False
    # the registry's copy of the disk changed: resolve and fetch refuse it, and write nothing
    blob = folder / "blobs" / "sha256" / str(baked_vm_web.record.artifact.digest)[7:]
    with blob.open("r+b") as f:
        f.seek(1 << 20)
        byte = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([byte[0] ^ 1]))
    out = tmp_path / "tampered" / "web.qcow2"
    refused = cli.invoke(app, ["fetch", "web@stable", "-o", str(out)], env=env)
    assert refused.exit_code != 0 and not out.exists()
    assert "altered" in refused.output or "not the signed" in refused.output


def test_vm_published_to_an_oci_registry_and_fetched(
    baked_vm_web: Outcome,
    vm_state: Path,
    keys: Path,
    registry: LiveRegistry,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    url = registry.url(f"bakevm{uuid.uuid4().hex[:8]}")
    env = _cli_env(vm_state, keys, url)
    pub = json.loads(_ok(env, "publish", str(baked_vm_web.record_path), "--json"))
    assert pub["ref"].startswith(f"{registry.host}/") and "@sha256:" in pub["ref"]
    _ok(env, "promote", "web@latest", "stable")
    tf = _ok(env, "resolve", "web@stable", "-t", "qemu", "--format", "tfvars")
    assert f'image_digest = "{baked_vm_web.record.artifact.digest}"' in tf
    _fetch_and_check(env, baked_vm_web.record.to_json(), tmp_path / "deploy" / "web.qcow2")


def test_drift_of_a_live_vm_against_its_signed_manifest(
    baked_vm_web: Outcome, vm_state: Path, keys: Path, tmp_path: Path, ssh_before: set[str]
) -> None:
    """A deployer's VM: fetched from the registry, booted, compared over SSH; then changed."""
    from bake.targets.qemu.verify import boot_vm

    env = _cli_env(vm_state, keys, f"dir:{tmp_path / 'registry'}")
    pub = json.loads(_ok(env, "publish", str(baked_vm_web.record_path), "--json"))
    assert "files" in pub["attestations"]  # taken from the verified VM before its checks ran
    _ok(env, "promote", "web@latest", "stable")
    disk = tmp_path / "deploy" / "web.qcow2"
    _ok(env, "fetch", "web@stable", "-o", str(disk))
    boot = vm.BootFiles(disk, disk.with_name("web.vmlinuz"), disk.with_name("web.initrd.img"))
    with boot_vm(process.run, process.spawn, boot, vm.Machine(), vm_state / "work" / "drift-vm") as live:
        args = ["drift", "web@stable", "-t", "qemu", "--host", f"ssh://root@{vm.SSH_ALIAS}"]
        args += ["--ssh-config", str(live.config), "--json"]
        clean = cli.invoke(app, args, env=env)
        assert clean.exit_code == 0, clean.output
        doc = json.loads(clean.stdout)
        assert doc["ok"] is True and doc["files"]["clean"] is True
        assert doc["checks"]["failed"] == 0 and doc["checks"]["passed"] == 13

        change = (
            "echo '# by hand' >> /etc/nginx/conf.d/site.conf; touch /etc/added-by-hand; systemctl stop nginx"
        )
        process.run(process.Call(argv=vm.ssh_argv(live.config, change)))
        drifted = cli.invoke(app, args, env=env)
        assert drifted.exit_code == 1, drifted.output
        doc = json.loads(drifted.stdout)
        changed = {c["path"] for c in doc["files"]["changed"]}
        added = {a["path"] for a in doc["files"]["added"]}
        assert "/etc/nginx/conf.d/site.conf" in changed and "/etc/added-by-hand" in added
        assert doc["checks"]["ok"] is False  # nginx no longer runs: its service check fails
        failed = [r["title"] for r in doc["checks"]["results"] if r["outcome"] == "failed"]
        assert any(t.startswith("service nginx") for t in failed), failed
    assert_nothing_left(vm_state, ssh_before)


def test_playground_with_an_ansible_play_bakes_as_a_vm_on_a_fresh_runner(
    baked_vm_web: Outcome,
    vm_ctx: BakeContext,
    vm_state: Path,
    keys: Path,
    info: packer.PackerInfo,
    tmp_path: Path,
    ssh_before: set[str],
) -> None:
    """The playground recipe (every new module, a loop, a handler, and a play with a local
    role over SSH) baked by a fresh runner — a new state folder — whose registry holds the
    module's debian-base: the parent's disk, kernel and initrd are fetched by digest and
    built on, never baked again, and the child's provenance names their published digest.
    QEMU's user network reaches this host's loopback at 10.0.2.2, where get_url's files are
    served."""
    from dataclasses import replace

    from bake.app.publish import find_published, publish_records
    from bake.app.session import RegistryAccess, Session
    from tests.integration.test_playground import PLAYGROUND, SERVED, TOKEN, Seen, serve

    url = f"dir:{tmp_path / 'registry'}"
    base = baked_vm_web.parents[0]
    _ok(
        _cli_env(vm_state, keys, url), "publish", str(record_path(vm_state, base.name, "qemu", base.bake_key))
    )
    fresh = tmp_path / "fresh-runner"
    session = Session.load(ROOT, {**_cli_env(fresh, keys, url), "BAKE_PLAY_TOKEN": TOKEN})
    access = RegistryAccess(url, (str(keys / "ci.pub"),), str(keys / "ci.key"))

    server = serve("127.0.0.1", SERVED)
    served = next(server)
    try:
        port = served.url.rsplit(":", 1)[1]
        (p,) = plan_recipe(
            PLAYGROUND,
            info,
            targets=["qemu"],
            extra_vars={"files_url": f"http://10.0.2.2:{port}"},
            search_path=[RECIPES],
        )
        seen = Seen([])
        ctx = replace(
            vm_ctx,
            state=fresh,
            environ={**environ(fresh), "BAKE_PLAY_TOKEN": TOKEN},
            runner=seen.runner,
            published=find_published(session, access),
        )
        t0 = time.monotonic()
        out = bake_vm(ctx, p)
        seconds = time.monotonic() - t0
    finally:
        server.close()
    rec = out.record
    assert rec.good and rec.verify["method"] == "booted-vm", rec.error
    assert rec.verify["failed"] == 0 and rec.verify["passed"] == len(rec.verify["results"])
    # built on the published debian-base, fetched by digest: no mmdebstrap, no base disk
    assert out.parents == () and rec.parent is not None
    assert rec.parent["published"] == "1.0.0+1" and rec.parent["digest"] == base.artifact.digest
    assert not (fresh / "vm-bases").exists() and not (fresh / "records" / "debian-base").exists()
    (fetched,) = fresh.glob("published/debian-base-*/debian-base.qcow2")
    assert sha256_file(fetched) == base.artifact.digest
    assert "/tools.tar.gz" in served.requests
    text = "\n".join(seen.lines)
    for task in ("render the greeting", "settings in app.ini", "greeting changed", "PLAY RECAP"):
        assert task in text, task
    assert not any(TOKEN in line for line in seen.lines)
    for path in fresh.rglob("*"):
        if path.is_file() and path.suffix not in (".qcow2", ".img") and path.name != "vmlinuz":
            assert TOKEN.encode() not in path.read_bytes(), path
    assert_nothing_left(fresh, ssh_before)
    print(f"playground VM bake: {seconds:.1f} s")
    # published, the child's provenance names the parent's published digest
    (pub,) = publish_records(session, [rec], access)
    snap = client.read(open_registry(url), client.Trust((keys / "ci.pub",), tmp_path / "reader"))
    assert snap.image(rec.name).versions[pub.version].parent == "debian-base@1.0.0+1"
    envelope = snap.attestation(rec.name, pub.version, "provenance", pub.attestations["provenance"])
    predicate = json.dumps(json.loads(base64.b64decode(json.loads(envelope)["payload"]))["predicate"])
    assert str(base.artifact.digest).removeprefix("sha256:") in predicate
