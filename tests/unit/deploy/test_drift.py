"""Tests for bake.drift: the streamed compare, the report and its renderings, check_drift."""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from typing import IO

import pytest

from bake.attest import filemanifest as fm
from bake.attest.digest import sha256_bytes
from bake.attest.filemanifest import Entry
from bake.deploy import drift
from bake.deploy.drift import Change, DriftReport
from bake.deploy.instances import LayerChanges
from bake.errors import BakeError
from bake.infra.process import Call, LineSink, Result
from bake.targets.docker.engine import Engine

VOL = fm.volatile_set()
IMAGE = sha256_bytes(b"image")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def f(path: str, content: str = "x", mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, "file", mode, uid, gid, sha256=sha(content))


def d(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, "dir", mode, 0, 0)


def ln(path: str, target: str) -> Entry:
    return Entry(path, "symlink", 0o777, 0, 0, target=target)


MANIFEST = [
    d("/etc"),
    f("/etc/passwd", "root"),
    f("/etc/nginx/site.conf", "listen 8080"),
    ln("/etc/alternatives/pager", "/bin/more"),
    f("/usr/bin/su", "su", mode=0o4755),
    f("/srv/www/index.html", "<h1>", uid=1001),
    d("/srv/old"),
    f("/srv/old/a"),
]


def report(
    live: list[Entry], manifest: list[Entry] = MANIFEST, volatile: frozenset[str] = VOL
) -> DriftReport:
    return drift.compare(manifest, iter(live), volatile, instance="docker://web-1", image=IMAGE)


# --- compare ---------------------------------------------------------------------------


def test_an_unchanged_instance_is_clean() -> None:
    rep = report(list(reversed(MANIFEST)))
    assert rep.clean
    assert rep.compared == len(MANIFEST)
    assert (rep.added, rep.removed, rep.changed) == ((), (), ())


def test_added_removed_and_changed_are_told_apart() -> None:
    live = [e for e in MANIFEST if not e.path.startswith("/srv/old")]
    live = [e for e in live if e.path != "/etc/passwd"]
    live += [f("/etc/passwd", "root\nevil"), f("/etc/cron.d/backdoor"), d("/usr/share/doc/less")]
    rep = report(live)
    assert [e.path for e in rep.added] == ["/etc/cron.d/backdoor", "/usr/share/doc/less"]
    assert [e.path for e in rep.removed] == ["/srv/old", "/srv/old/a"]
    assert [(c.path, c.aspects) for c in rep.changed] == [("/etc/passwd", ("content",))]
    assert not rep.clean


@pytest.mark.parametrize(
    ("after", "aspects"),
    [
        (f("/usr/bin/su", "su", mode=0o755), ("mode",)),
        (f("/usr/bin/su", "su", mode=0o4755, uid=1000), ("owner",)),
        (f("/usr/bin/su", "su", mode=0o4755, gid=50), ("owner",)),
        (f("/usr/bin/su", "evil", mode=0o4755), ("content",)),
        (f("/usr/bin/su", "evil", mode=0o4777, uid=1), ("content", "owner", "mode")),
        (ln("/usr/bin/su", "/tmp/evil"), ("type",)),
        (Entry("/usr/bin/su", "file", 0o4755, 0, 0, sha256=None), ("content",)),  # unreadable
    ],
)
def test_differences_name_each_aspect(after: Entry, aspects: tuple[str, ...]) -> None:
    assert drift.differences(f("/usr/bin/su", "su", mode=0o4755), after) == aspects


def test_a_symlink_pointing_elsewhere_is_a_target_change() -> None:
    rep = report([*MANIFEST[:3], ln("/etc/alternatives/pager", "/usr/bin/less"), *MANIFEST[4:]])
    (change,) = rep.changed
    assert change.aspects == ("target",)
    assert rep.changed_by("target") == (change,)
    assert rep.changed_by("content") == ()


def test_volatile_paths_are_ignored_on_both_sides() -> None:
    manifest = [*MANIFEST, f("/var/log/dpkg.log", "old"), f("/srv/cache/a")]
    live = [
        *MANIFEST,
        f("/var/log/dpkg.log", "new"),
        f("/var/log/nginx/access.log"),
        f("/tmp/x"),
        f("/run/x"),
    ]
    vol = fm.volatile_set(["/srv/cache"])
    rep = report(live, manifest, vol)
    assert rep.clean
    assert rep.compared == len(MANIFEST)
    assert "/srv/cache" in rep.volatile


def test_groups_are_in_tree_order() -> None:
    live = [*MANIFEST, f("/a-b"), d("/a"), f("/a/z"), f("/a/b/c"), d("/a/b")]
    assert [e.path for e in report(live).added] == ["/a", "/a/b", "/a/b/c", "/a/z", "/a-b"]


def test_compare_streams_the_live_side() -> None:
    # Memory beyond the manifest grows with the differences, not with the image: a live
    # side of 40,000 matching entries made on the fly is never held.
    manifest = [f(f"/usr/lib/f{i}", str(i)) for i in range(40_000)]

    def live() -> Iterator[Entry]:
        for i in range(40_000):
            yield f(f"/usr/lib/f{i}", str(i) if i != 7 else "changed")

    tracemalloc.start()
    try:
        rep = drift.compare(manifest, live(), VOL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [c.path for c in rep.changed] == ["/usr/lib/f7"]
    assert rep.compared == 40_000
    held_live = 40_000 * 300  # what keeping the live entries would cost, at least
    assert peak < held_live / 2


# --- rendering -------------------------------------------------------------------------


def test_a_clean_report_is_one_line() -> None:
    text = drift.render_text(report(MANIFEST))
    assert text == f"no drift: docker://web-1 vs {IMAGE} matches its manifest (8 paths compared)\n"


def sample() -> DriftReport:
    live = [e for e in MANIFEST if not e.path.startswith("/srv/old")]
    live = [
        e for e in live if e.path not in ("/etc/nginx/site.conf", "/usr/bin/su", "/etc/alternatives/pager")
    ]
    live += [
        f("/etc/nginx/site.conf", "listen 80"),
        f("/usr/bin/su", "su", mode=0o4777, uid=1000),
        ln("/etc/alternatives/pager", "/usr/bin/less"),
        f("/usr/bin/less"),
        d("/usr/share/doc/less"),
        f("/usr/share/doc/less/copyright"),
        f("/usr/share/doc/less/changelog.gz"),
        Entry("/srv/fifo", "other", 0o644, 0, 0),
    ]
    return report(live)


def test_the_text_report_leads_with_the_verdict_and_groups_changes() -> None:
    text = drift.render_text(sample())
    lines = text.splitlines()
    assert lines[0] == f"DRIFT: docker://web-1 vs {IMAGE}: 5 added, 2 removed, 3 changed (11 paths compared)"
    assert "content changed (1)" in lines
    assert "link target changed (1)" in lines
    assert "owner changed (1)" in lines  # su: owner first, its mode change on the same line
    assert "mode changed (0)" not in text
    assert any("/usr/bin/su" in x and "owner 0:0 → 1000:0" in x and "mode 4755 → 4777" in x for x in lines)
    assert "  ~ /etc/alternatives/pager  (target /bin/more → /usr/bin/less)" in lines
    assert "added (5: 3 files, 1 folder, 1 other)" in lines
    assert "removed (2: 1 file, 1 folder)" in lines
    assert "  + /usr/share/doc/less/  (+ 2 inside)" in lines
    assert "  - /srv/old/  (+ 1 inside)" in lines


def test_the_text_report_is_limited_per_group() -> None:
    live = [*MANIFEST, *(f(f"/opt/f{i:03}") for i in range(60))]
    text = drift.render_text(report(live), limit=10)
    assert "  + /opt/f009" in text
    assert "/opt/f010" not in text
    assert "… and 50 more (the JSON report lists all)" in text


def test_hostile_names_cannot_fake_report_lines() -> None:
    live = [*MANIFEST, f("/tmpx\nno drift: all good\x1b[2J"), f("/srv/caf\udce9")]
    text = drift.render_text(report(live))
    assert "\nno drift" not in text
    assert "\x1b" not in text
    assert "/tmpx\\nno drift: all good\\x1b[2J" in text
    assert "/srv/caf\\xe9" in text


def test_the_json_report_lists_everything() -> None:
    data = sample().to_json()
    assert data["clean"] is False
    assert data["instance"] == "docker://web-1"
    assert data["image"] == IMAGE
    assert data["counts"] == {
        "added": 5,
        "removed": 2,
        "changed": 3,
        "compared": 11,
        "changed_type": 0,
        "changed_content": 1,
        "changed_target": 1,
        "changed_owner": 1,
        "changed_mode": 1,
    }
    su = next(c for c in data["changed"] if c["path"] == "/usr/bin/su")
    assert su["aspects"] == ["owner", "mode"]
    assert su["before"]["mode"] == "4755"
    assert su["after"]["uid"] == 1000
    assert [e["path"] for e in data["removed"]] == ["/srv/old", "/srv/old/a"]
    assert "/proc" in data["volatile"]


def test_a_change_knows_its_path() -> None:
    change = Change(f("/a"), replace(f("/a"), mode=0o600), ("mode",))
    assert change.path == "/a"


# --- check_drift: the one stream ---------------------------------------------------------

ENGINE = Engine("unix:///test/docker.sock")


def tar_of(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Fake:
    def __init__(self, output: bytes) -> None:
        self.output = output
        self.runs: list[Call] = []
        self.streams: list[Call] = []

    def run(self, call: Call, on_line: LineSink | None = None) -> Result:
        self.runs.append(call)
        return Result(call.argv, 0, "c0ffee\n", "", 0.0)

    @contextlib.contextmanager
    def stream(self, call: Call) -> Iterator[IO[bytes]]:
        self.streams.append(call)
        yield io.BytesIO(self.output)


def test_check_drift_of_a_container_reads_its_export() -> None:
    fake = Fake(tar_of([("etc/passwd", b"root"), ("etc/hosts", b"10.0.0.2 web"), ("srv/new", b"")]))
    manifest = [f("/etc/passwd", "root")]
    rep = drift.check_drift(
        fake.run, ENGINE, manifest, "docker://web-1", ["/srv/cache"], image_digest=IMAGE, streamer=fake.stream
    )
    assert [e.path for e in rep.added] == ["/srv/new"]
    assert rep.image == IMAGE
    assert "/srv/cache" in rep.volatile
    assert fake.runs[0].argv == ("docker", "container", "inspect", "--format", "{{.Image}}", "--", "web-1")
    assert [c.argv for c in fake.streams] == [("docker", "export", "--", "web-1")]
    assert rep.method == "stream"


@pytest.mark.parametrize(
    ("image_id", "full", "host"),
    [
        (None, False, "unix:///test/docker.sock"),  # no signed image id: nothing to lean on
        ("sha256:other", False, "unix:///test/docker.sock"),  # the container runs another image
        ("c0ffee", True, "unix:///test/docker.sock"),  # --full
        ("c0ffee", False, "tcp://10.0.0.1:2376"),  # no local socket to ask for the layer
    ],
)
def test_check_drift_streams_an_export_unless_the_layer_is_enough(
    image_id: str | None, full: bool, host: str
) -> None:
    fake = Fake(tar_of([("etc/passwd", b"root")]))
    rep = drift.check_drift(
        fake.run,
        Engine(host),
        [f("/etc/passwd", "root")],
        "docker://web-1",
        (),
        streamer=fake.stream,
        image_id=image_id,
        full=full,
    )
    assert rep.clean and rep.method == "stream"
    assert [c.argv[1] for c in fake.streams] == ["export"]


# --- compare_changes: a container's writable layer against its image's manifest ------------

LAYER_MANIFEST = [
    d("/etc"),
    f("/etc/passwd", "root"),
    d("/usr"),
    d("/usr/share"),
    d("/usr/share/doc"),
    d("/usr/share/doc/curl"),
    f("/usr/share/doc/curl/copyright"),
    f("/srv/index.html", "hi"),
]


def test_compare_changes_reads_only_the_layer() -> None:
    changes = LayerChanges(
        entries=(f("/etc/passwd", "root\nevil"), d("/etc"), f("/usr/local/bin/backdoor"), f("/tmp/x")),
        deleted=("/usr/share/doc/curl",),
    )
    rep = drift.compare_changes(LAYER_MANIFEST, changes, VOL, instance="docker://web-1", image=IMAGE)
    assert [e.path for e in rep.added] == ["/usr/local/bin/backdoor"]  # /tmp is volatile
    assert [e.path for e in rep.removed] == ["/usr/share/doc/curl", "/usr/share/doc/curl/copyright"]
    assert [(c.path, c.aspects) for c in rep.changed] == [("/etc/passwd", ("content",))]
    assert rep.compared == len(LAYER_MANIFEST) - 2 + 1
    assert rep.method == "layer" and rep.to_json()["method"] == "layer"


def test_compare_changes_of_an_empty_layer_is_clean() -> None:
    rep = drift.compare_changes(LAYER_MANIFEST, LayerChanges((), ()), VOL)
    assert rep.clean and rep.compared == len(LAYER_MANIFEST)


def test_a_deleted_path_takes_only_its_own_subtree() -> None:
    manifest = [f("/etc/a"), f("/etc/ab"), f("/etc/a/b")]
    rep = drift.compare_changes(manifest, LayerChanges((), ("/etc/a",)), VOL)
    assert [e.path for e in rep.removed] == ["/etc/a", "/etc/a/b"]


def test_check_drift_over_ssh_runs_one_command() -> None:
    out = b"@f 644 0 0 /etc/passwd\0\0" + sha("root").encode() + b"  /etc/passwd\0"
    fake = Fake(out)
    rep = drift.check_drift(
        fake.run,
        None,
        [f("/etc/passwd", "root")],
        "ssh://admin@10.0.0.5:2222",
        (),
        streamer=fake.stream,
        environ={},
    )
    assert rep.clean
    assert fake.runs == []
    (call,) = fake.streams
    assert call.argv[0] == "ssh"
    assert call.argv[-1] == fm.find_command(VOL)


def test_check_drift_of_a_container_needs_an_engine() -> None:
    fake = Fake(b"")
    with pytest.raises(BakeError, match="needs a Docker engine"):
        drift.check_drift(fake.run, None, MANIFEST, "docker://web-1", (), streamer=fake.stream)
