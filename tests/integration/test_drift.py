"""Drift for real: the manifest of a baked image, signed; a container of it, tampered with."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from bake.attest import filemanifest as fm
from bake.attest.keys import SigningKey
from bake.attest.statements import open_statement, sign_statement
from bake.deploy import drift
from bake.deploy.drift import DriftReport
from bake.errors import TrustError
from bake.infra import process
from bake.infra.process import Call
from bake.targets.base import Outcome
from bake.targets.docker import engine as docker
from bake.targets.docker.evidence import DRIFT_LABEL, collect_image_manifest
from tests.integration.conftest import Bakes

pytestmark = pytest.mark.integration

# nginx creates its temporary folders when it starts: run-time state the web recipe
# should declare (`volatile: [/var/lib/nginx]`); declared here until it does.
WEB_VOLATILE = ("/var/lib/nginx",)


def wait_running(context: Bakes, cid: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not docker.container_state(context.runner, context.engine, cid).get("Running"):
        assert time.monotonic() < deadline, "the web container did not start"
        time.sleep(0.2)


def sh(context: Bakes, cid: str, script: str) -> None:
    context.runner(context.engine.call("exec", cid, "sh", "-ec", script, timeout=600))


def paths(report: DriftReport) -> dict[str, set[str]]:
    return {
        "added": {e.path for e in report.added},
        "removed": {e.path for e in report.removed},
        "changed": {c.path for c in report.changed},
    }


def test_drift_of_a_running_web_container(baked_web: Outcome, context: Bakes) -> None:
    image = str(baked_web.record.artifact.id)
    runner, engine = context.runner, context.engine

    # Bake time: the manifest of the image, signed as a statement about its digest.
    entries = collect_image_manifest(runner, engine, image, WEB_VOLATILE)
    by_path = {e.path: e for e in entries}
    assert by_path["/etc/nginx/conf.d/site.conf"].kind == "file"
    assert by_path["/usr/bin/su"].mode & 0o4000  # setuid bits are kept
    assert not any(fm.is_volatile(p, fm.volatile_set(WEB_VOLATILE)) for p in by_path)
    key = SigningKey.generate()
    volatile = sorted(fm.volatile_set(WEB_VOLATILE))
    envelope = sign_statement(fm.manifest_statement(image, entries, volatile, name="web"), key)
    manifest = fm.open_manifest(envelope, [key.public], image_digest=image)
    assert list(manifest.entries) == entries

    # A tampered manifest is refused.
    payload = bytearray(base64.b64decode(str(envelope["payload"])))
    payload[payload.index(b"/etc/nginx")] = ord("E")
    forged = {**envelope, "payload": base64.b64encode(bytes(payload)).decode()}
    with pytest.raises(TrustError):
        open_statement(forged, [key.public], expect_subject_digest=image)
    with pytest.raises(TrustError):
        fm.open_manifest(forged, [key.public], image_digest=image)

    name = f"bake-drift-test-{secrets.token_hex(4)}"
    cid = ""
    try:
        cid = docker.run_detached(runner, engine, image, name, labels={DRIFT_LABEL: "test"})
        wait_running(context, cid)
        url = f"docker://{name}"

        def both() -> tuple[DriftReport, DriftReport]:
            """The writable-layer check (the default for a container of the signed image)
            and the full export; they must agree on everything but the method."""
            args = (runner, engine, manifest.entries, url, manifest.volatile)
            layer = drift.check_drift(*args, image_digest=image, image_id=image)
            full = drift.check_drift(*args, image_digest=image, image_id=image, full=True)
            assert (layer.method, full.method) == ("layer", "stream")
            assert layer.to_json() == {**full.to_json(), "method": "layer"}
            return layer, full

        fresh, _ = both()
        assert fresh.clean, drift.render_text(fresh)
        assert fresh.compared == len(entries)

        sh(context, cid, "echo '<h1>defaced</h1>' > /srv/www/index.html")
        sh(context, cid, "printf '#!/bin/sh\\nexec sh\\n' > /usr/local/bin/backdoor")
        sh(context, cid, "chmod 0666 /etc/nginx/conf.d/site.conf")
        # a folder removed, and one emptied and made again (an opaque folder in the layer)
        sh(context, cid, "rm -rf /usr/share/doc/curl")
        sh(context, cid, "rm -rf /usr/share/doc/nginx-light && mkdir /usr/share/doc/nginx-light")
        sh(context, cid, "touch /usr/share/doc/nginx-light/new && chown 4242 /srv/www")
        layer, _ = both()
        assert {c.path: c.aspects for c in layer.changed} == {
            "/srv/www/index.html": ("content",),
            "/etc/nginx/conf.d/site.conf": ("mode",),
            "/srv/www": ("owner",),
        }
        assert {e.path for e in layer.added} == {"/usr/local/bin/backdoor", "/usr/share/doc/nginx-light/new"}
        removed = {e.path for e in layer.removed}
        assert {"/usr/share/doc/curl", "/usr/share/doc/nginx-light/copyright"} <= removed
        assert all(p.startswith(("/usr/share/doc/curl", "/usr/share/doc/nginx-light/")) for p in removed)
        sh(
            context,
            cid,
            "apt-get update -qq && apt-get install -y -qq --no-install-recommends less >/dev/null",
        )

        report = drift.check_drift(
            runner, engine, manifest.entries, url, manifest.volatile, image_digest=image
        )
        text = drift.render_text(report)
        assert not report.clean
        changes = {c.path: c.aspects for c in report.changed}
        assert changes["/srv/www/index.html"] == ("content",), text
        assert changes["/etc/nginx/conf.d/site.conf"] == ("mode",), text
        assert "content" in changes["/var/lib/dpkg/status"], text  # the package install
        added = {e.path for e in report.added}
        assert {"/usr/local/bin/backdoor", "/usr/bin/less", "/usr/share/doc/less"} <= added, text
        assert not any(p.startswith(("/var/log/", "/var/cache/", "/var/lib/apt/lists/")) for p in added)
        for shown in ("/srv/www/index.html", "/usr/local/bin/backdoor", "/etc/nginx/conf.d/site.conf"):
            assert shown in text
        assert "/usr/share/doc/less/  (+ " in text
        assert text.startswith(f"DRIFT: {url} vs {image}:")

        # The ssh:// pipeline (GNU find + sha256sum), run in the same container, agrees.
        vol = fm.volatile_set(manifest.volatile)
        with process.stream(engine.call("exec", cid, "sh", "-c", fm.find_command(vol))) as out:
            by_find = drift.compare(manifest.entries, fm.find_entries(out), vol)
        assert paths(by_find) == paths(report)
        assert {c.path: c.aspects for c in by_find.changed} == changes
    finally:
        if cid:
            docker.remove_container(runner, engine, cid)
    assert docker.containers(runner, engine, label=DRIFT_LABEL) == []


def test_drift_over_ssh_agrees_with_docker_export(baked_web: Outcome, context: Bakes, tmp_path: Path) -> None:
    """The real ssh:// transport: an sshd installed into a container of the image."""
    image = str(baked_web.record.artifact.id)
    runner, engine = context.runner, context.engine
    entries = collect_image_manifest(runner, engine, image, WEB_VOLATILE)
    key = tmp_path / "id"
    runner(Call(argv=("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))))
    name = f"bake-drift-ssh-{secrets.token_hex(4)}"
    cid = ""
    try:
        cid = docker.run_detached(runner, engine, image, name, labels={DRIFT_LABEL: "test"})
        wait_running(context, cid)
        sh(
            context,
            cid,
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
            "apt-get install -y -qq --no-install-recommends openssh-server >/dev/null 2>&1 && "
            "mkdir -p -m 700 /root/.ssh /run/sshd",
        )
        runner(engine.call("cp", f"{key}.pub", f"{cid}:/root/.ssh/authorized_keys"))
        sh(context, cid, "chown root:root /root/.ssh/authorized_keys && /usr/sbin/sshd")
        ip = runner(
            engine.call(
                "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid
            )
        ).stdout.strip()
        known = tmp_path / "known_hosts"

        @contextlib.contextmanager
        def with_test_key(call: Call) -> Iterator[IO[bytes]]:
            # Users configure keys and known hosts in ~/.ssh; this test brings its own.
            extra = ("-i", str(key), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=no")
            with process.stream(
                dataclasses.replace(call, argv=(call.argv[0], *extra, *call.argv[1:]))
            ) as out:
                yield out

        by_export = drift.check_drift(runner, engine, entries, f"docker://{name}", WEB_VOLATILE)
        by_ssh = drift.check_drift(
            runner, None, entries, f"ssh://root@{ip}:22", WEB_VOLATILE, streamer=with_test_key
        )
        assert not by_ssh.clean  # openssh-server is drift too
        assert "/usr/sbin/sshd" in {e.path for e in by_ssh.added}
        assert paths(by_ssh) == paths(by_export)
        assert by_ssh.changed == by_export.changed
    finally:
        if cid:
            docker.remove_container(runner, engine, cid)
