"""The deterministic rewrite of an exported filesystem, the OCI image written from it, and
the comparison that names what differs. Tars are built in memory; docker and skopeo are a
recording fake runner."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from bake.errors import BakeError
from bake.infra import process
from bake.infra.process import Call, Result
from bake.targets.docker import compare
from bake.targets.docker import normalize as rp
from bake.targets.docker.engine import Engine
from tests import tars
from tests.tars import tar_bytes

EPOCH = rp.EPOCH
LATER = EPOCH + 86400 * 400
EARLIER = EPOCH - 1000
ENGINE = Engine("unix:///test/docker.sock")


# --- tars in memory ------------------------------------------------------------------------


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: Any
) -> tuple[tarfile.TarInfo, bytes]:
    """tests.tars.member, dated after the epoch unless told otherwise."""
    return tars.member(name, kind, data, **{"mtime": LATER, **kw})


def rewrite(data: bytes, volatile: tuple[str, ...] = ()) -> tuple[bytes, rp.Layer]:
    out = io.BytesIO()
    layer = rp.rewrite_layer(io.BytesIO(data), out, io.BytesIO(), epoch=EPOCH, volatile=volatile)
    return out.getvalue(), layer


def members_of(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return tar.getmembers()


def content_of(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


ROOTFS = (
    member("etc", tarfile.DIRTYPE, mode=0o755),
    member("etc/passwd", data=b"root:x:0:0:root:/root:/bin/bash\n"),
    member("usr", tarfile.DIRTYPE, mode=0o755),
    member("usr/bin", tarfile.DIRTYPE, mode=0o755),
    member("usr/bin/perl", data=b"\x7fELF perl", mode=0o755, mtime=EARLIER),
    member("usr/bin/perl5.36.0", tarfile.LNKTYPE, link="usr/bin/perl", mode=0o755),
    member("usr/bin/su", data=b"\x7fELF su", mode=0o4755),
    member("bin", tarfile.SYMTYPE, mode=0o777, link="usr/bin"),
    member("dev", tarfile.DIRTYPE, mode=0o755),
    member("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
    member("run", tarfile.DIRTYPE, mode=0o755),
    member("srv/initctl", tarfile.FIFOTYPE, mode=0o600),
    member("srv", tarfile.DIRTYPE, mode=0o755),
    member("srv/www", tarfile.DIRTYPE, mode=0o2750, uid=1001, gid=33),
    member("srv/www/index.html", data=b"<h1>hi</h1>\n", uid=1001, gid=1001),
    member("srv/caf\u00e9.txt", data=b"non-ascii name"),
    member("srv/" + "long/" * 30 + "name", data=b"a long name"),
)


# --- the rewrite ---------------------------------------------------------------------------


def test_entries_come_sorted_by_path_with_every_kind_kept() -> None:
    out, _ = rewrite(tar_bytes(*reversed(ROOTFS[9:]), *ROOTFS[:9]))
    names = [m.name for m in members_of(out)]
    assert names == sorted(names, key=lambda n: n.encode())
    kinds = {m.name: m.type for m in members_of(out)}
    assert kinds["dev/null"] == tarfile.CHRTYPE
    assert kinds["srv/initctl"] == tarfile.FIFOTYPE
    assert kinds["bin"] == tarfile.SYMTYPE
    null = next(m for m in members_of(out) if m.name == "dev/null")
    assert (null.devmajor, null.devminor, null.mode) == (1, 3, 0o666)
    assert content_of(out, "srv/caf\u00e9.txt") == b"non-ascii name"
    assert content_of(out, "srv/" + "long/" * 30 + "name") == b"a long name"


def test_times_are_clamped_to_the_epoch_and_owners_are_numbers_only() -> None:
    out, _ = rewrite(tar_bytes(*ROOTFS))
    got = {m.name: m for m in members_of(out)}
    assert got["etc/passwd"].mtime == EPOCH
    assert got["usr/bin/perl"].mtime == EARLIER  # older than the epoch: kept
    assert all(m.uname == "" and m.gname == "" for m in got.values())
    assert (got["srv/www"].uid, got["srv/www"].gid, got["srv/www"].mode) == (1001, 33, 0o2750)
    assert got["usr/bin/su"].mode == 0o4755


def test_of_the_pax_records_only_xattrs_are_kept() -> None:
    cap = "\x01\x00\x00\x02\x00 \x00\x00\udcff"  # binary, as tarfile reads it
    pax = {"atime": "1700000000.5", "ctime": "1700000001.25", "SCHILY.xattr.security.capability": cap}
    out, _ = rewrite(tar_bytes(member("usr/bin/ping", data=b"ping", pax=pax)))
    (ping,) = members_of(out)
    assert {k: v for k, v in ping.pax_headers.items() if k != "hdrcharset"} == {
        "SCHILY.xattr.security.capability": cap
    }
    assert b"atime" not in out and b"ctime" not in out


def test_output_does_not_depend_on_the_input_order_names_or_format() -> None:
    first, layer = rewrite(tar_bytes(*ROOTFS))
    for seed in range(5):
        shuffled = list(ROOTFS)
        random.Random(seed).shuffle(shuffled)
        # a hard link must follow its target in any tar: move the links to the end
        shuffled.sort(key=lambda m: m[0].type == tarfile.LNKTYPE)
        for info, _ in shuffled:
            info.uname, info.gname = f"user{seed}", f"group{seed}"
            if info.name != "usr/bin/perl":
                info.mtime = LATER + seed
        fmt = (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT)[seed % 2]
        again, other = rewrite(tar_bytes(*shuffled, fmt=fmt))
        assert again == first
        assert other == layer
    assert layer.digest == "sha256:" + hashlib.sha256(first).hexdigest()
    assert layer.size == len(first)


def test_volatile_paths_are_dropped_and_logs_kept_empty() -> None:
    data = tar_bytes(
        member(".dockerenv"),
        member("tmp", tarfile.DIRTYPE, mode=0o1777),
        member("tmp/packer-1234", tarfile.DIRTYPE),
        member("tmp/packer-1234/script.sh", data=b"echo"),
        member("run", tarfile.DIRTYPE),
        member("run/lock", tarfile.DIRTYPE, mode=0o1777),
        member("run/nginx.pid", data=b"42\n"),
        member("var/log", tarfile.DIRTYPE),
        member("var/log/nginx", tarfile.DIRTYPE, gid=4),
        member("var/log/nginx/error.log", data=b"", mode=0o640, uid=33, gid=4),
        member("var/log/dpkg.log", data=b"2026-11-26 22:54:12 install nginx\n"),
        member("var/cache/apt", tarfile.DIRTYPE),
        member("var/cache/apt/archives", tarfile.DIRTYPE),
        member("var/cache/apt/pkgcache.bin", data=b"cache"),
        member("var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease", data=b"Date: x"),
        member("var/cache/ldconfig/aux-cache", data=b"times"),
        member("var/cache/debconf/config.dat", data=b"Name: x\n"),
        member("var/cache/debconf/config.dat-old", data=b"Name: old\n"),
        member("var/lib/dbus/machine-id", data=b"0123456789abcdef0123456789abcdef\n"),
    )
    out, layer = rewrite(data)
    got = {m.name: m for m in members_of(out)}
    assert sorted(got) == [
        "run",
        "run/lock",
        "tmp",
        "var/cache/apt",
        "var/cache/apt/archives",
        "var/cache/debconf/config.dat",
        "var/log",
        "var/log/dpkg.log",
        "var/log/nginx",
        "var/log/nginx/error.log",
    ]
    assert got["var/log/dpkg.log"].size == 0
    error_log = got["var/log/nginx/error.log"]
    assert (error_log.uid, error_log.gid, error_log.mode) == (33, 4, 0o640)
    assert layer.dropped == (
        "/.dockerenv",
        "/run/nginx.pid",
        "/tmp/packer-1234",
        "/tmp/packer-1234/script.sh",
        "/var/cache/apt/pkgcache.bin",
        "/var/cache/debconf/config.dat-old",
        "/var/cache/ldconfig/aux-cache",
        "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
        "/var/lib/dbus/machine-id",
    )
    assert layer.rewritten == ("/var/log/dpkg.log",)  # error.log was empty already


def test_the_callers_volatile_patterns_drop_whole_subtrees() -> None:
    data = tar_bytes(
        member("srv", tarfile.DIRTYPE),
        member("srv/cache", tarfile.DIRTYPE),
        member("srv/cache/a/b", data=b"x"),
        member("srv/keep", data=b"y"),
        member("opt/app/build.log", data=b"z"),
        member("opt/app/main.py", data=b"print()"),
    )
    out, layer = rewrite(data, volatile=("/srv/cache", "/opt/*/*.log"))
    assert [m.name for m in members_of(out)] == ["opt/app/main.py", "srv", "srv/keep"]
    assert layer.dropped == ("/opt/app/build.log", "/srv/cache", "/srv/cache/a/b")


@pytest.mark.parametrize("pattern", ["srv/cache", "/", "/*", "//"])
def test_volatile_patterns_must_be_absolute_and_below_the_root(pattern: str) -> None:
    with pytest.raises(BakeError):
        rewrite(tar_bytes(member("srv/x")), volatile=(pattern,))


def test_machine_id_engine_files_and_shadow_days_get_fixed_content() -> None:
    shadow = b"root:*:20783:0:99999:7:::\nweb:!:20783::::::\nnew:$y$j9T$abc:0:0:99999:7:::\nsys:*::::::\n"
    data = tar_bytes(
        member("etc/machine-id", data=b"0123456789abcdef0123456789abcdef\n", mode=0o444),
        member("etc/hostname", data=b"c8218e5dd85a\n", mode=0o755),
        member("etc/hosts", data=b"127.0.0.1 localhost\n172.17.0.4 c8218e5dd85a\n", mode=0o755),
        member("etc/resolv.conf", data=b"", mode=0o755),
        member("etc/shadow", data=shadow, mode=0o640, gid=42),
    )
    out, layer = rewrite(data)
    got = {m.name: m for m in members_of(out)}
    assert got["etc/machine-id"].size == 0 and got["etc/machine-id"].mode == 0o444
    assert all(got[f"etc/{n}"].size == 0 and got[f"etc/{n}"].mode == 0o644 for n in ("hostname", "hosts"))
    day = EPOCH // 86400
    assert content_of(out, "etc/shadow") == (
        f"root:*:{day}:0:99999:7:::\nweb:!:{day}::::::\nnew:$y$j9T$abc:0:0:99999:7:::\nsys:*::::::\n".encode()
    )
    assert layer.rewritten == (
        "/etc/hostname",
        "/etc/hosts",
        "/etc/machine-id",
        "/etc/resolv.conf",  # its mode
        "/etc/shadow",
    )


def test_a_hard_link_that_sorts_first_gets_the_content() -> None:
    data = tar_bytes(
        member("usr/bin/perlbug", data=b"#!/usr/bin/perl bug", mode=0o755),
        member("usr/bin/perlthanks", tarfile.LNKTYPE, link="usr/bin/perlbug", mode=0o755),
        member("usr/bin/a-perlbug", tarfile.LNKTYPE, link="usr/bin/perlthanks", mode=0o755),
    )
    out, _ = rewrite(data)
    got = members_of(out)
    assert [(m.name, m.type, m.linkname) for m in got] == [
        ("usr/bin/a-perlbug", tarfile.REGTYPE, ""),
        ("usr/bin/perlbug", tarfile.LNKTYPE, "usr/bin/a-perlbug"),
        ("usr/bin/perlthanks", tarfile.LNKTYPE, "usr/bin/a-perlbug"),
    ]
    assert content_of(out, "usr/bin/perlthanks") == b"#!/usr/bin/perl bug"


def test_a_kept_hard_link_to_a_dropped_file_keeps_the_content(tmp_path: Path) -> None:
    data = tar_bytes(
        member("tmp/build/tool", data=b"tool", mode=0o755),
        member("usr/bin/tool", tarfile.LNKTYPE, link="tmp/build/tool", mode=0o755),
        member("usr/bin/tool2", tarfile.LNKTYPE, link="tmp/build/tool", mode=0o755),
    )
    out, layer = rewrite(data)
    with tarfile.open(fileobj=io.BytesIO(out), mode="r:") as tar:
        tar.extractall(tmp_path, filter="tar")
    assert (tmp_path / "usr/bin/tool").read_bytes() == b"tool"
    assert (tmp_path / "usr/bin/tool").stat().st_ino == (tmp_path / "usr/bin/tool2").stat().st_ino
    assert not (tmp_path / "tmp" / "build").exists()
    assert layer.dropped == ("/tmp/build/tool",)


def test_a_stream_that_is_not_a_tar_is_a_clear_error() -> None:
    with pytest.raises(BakeError, match="cannot read the exported filesystem as a tar"):
        rewrite(b"garbage" * 300)


def test_fix_shadow_leaves_zero_and_empty_days_alone() -> None:
    assert rp.fix_shadow(b"a:*:0:0:::::\nb:*:::::::\nc:*:19000::::::", 86400 * 5) == (
        b"a:*:0:0:::::\nb:*:::::::\nc:*:5::::::"
    )


# --- the epoch and the OCI image -----------------------------------------------------------


def test_the_epoch_is_stable_and_needs_a_bake_key() -> None:
    key = "sha256:" + "ab" * 32
    assert rp.epoch_from_key(key) == rp.epoch_from_key(key) == 1577836800
    with pytest.raises(BakeError):
        rp.epoch_from_key("not-a-key")


INSPECT: dict[str, Any] = {
    "Id": "sha256:" + "1" * 64,
    "Architecture": "amd64",
    "Os": "linux",
    "Created": "2026-11-26T22:54:12.123456789Z",
    "Config": {
        "Hostname": "c8218e5dd85a",
        "Image": "sha256:" + "2" * 64,
        "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
        "Cmd": None,
        "Entrypoint": ["nginx", "-g", "daemon off;"],
        "ExposedPorts": {"8080/tcp": {}},
        "Labels": {"io.bake.version": "1.4.0", "io.bake.recipe": "web"},
        "User": "",
        "Volumes": None,
        "WorkingDir": "",
        "OnBuild": None,
    },
}


def test_the_config_keeps_the_images_own_settings_in_canonical_form() -> None:
    diff_id = "sha256:" + "3" * 64
    config = rp.image_config(INSPECT, diff_id, EPOCH)
    assert config == (
        b'{"architecture":"amd64","config":{"Entrypoint":["nginx","-g","daemon off;"],'
        b'"Env":["PATH=/usr/bin:/bin","LANG=C.UTF-8"],"ExposedPorts":{"8080/tcp":{}},'
        b'"Labels":{"io.bake.recipe":"web","io.bake.version":"1.4.0"}},'
        b'"created":"2020-01-01T00:00:00Z","history":[{"created":"2020-01-01T00:00:00Z",'
        b'"created_by":"bake: the baked filesystem, exported and normalized (reproducible)"}],'
        b'"os":"linux","rootfs":{"diff_ids":["sha256:' + b"3" * 64 + b'"],"type":"layers"}}'
    )
    changed = {**INSPECT, "Created": "2027-01-01T00:00:00Z", "Id": "sha256:" + "9" * 64}
    changed["Config"] = {**INSPECT["Config"], "Hostname": "other", "Image": "other"}
    assert rp.image_config(changed, diff_id, EPOCH) == config
    variant = rp.image_config({**INSPECT, "Architecture": "arm64", "Variant": "v8"}, diff_id, EPOCH)
    assert json.loads(variant)["variant"] == "v8"


def test_manifest_and_index_bytes_are_fixed() -> None:
    layer = rp.Layer("sha256:" + "4" * 64, 1024, (), ())
    manifest = rp.image_manifest(b"{}", layer)
    assert manifest == (
        b'{"config":{"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",'
        b'"mediaType":"application/vnd.oci.image.config.v1+json","size":2},"layers":[{"digest":"sha256:'
        + b"4"
        * 64
        + b'","mediaType":"application/vnd.oci.image.layer.v1.tar","size":1024}],'
        b'"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}'
    )
    index = json.loads(rp.image_index(manifest, "key-0123"))
    (entry,) = index["manifests"]
    assert entry["digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "key-0123"}
    with pytest.raises(BakeError):
        rp.image_index(manifest, "bad tag")


# --- normalize, with docker and skopeo faked -----------------------------------------------


class FakeEngine:
    """A runner and a streamer that record calls; `docker export` serves a tar."""

    def __init__(self, tar: bytes, *, inspect: dict[str, Any] = INSPECT, fail_export: bool = False) -> None:
        self.tar = tar
        self.inspect = inspect
        self.fail_export = fail_export
        self.calls: list[tuple[str, ...]] = []
        self.loaded: dict[str, str] = {}

    def run(self, call: Call, on_line: process.LineSink | None = None) -> Result:
        argv = call.argv
        self.calls.append(argv)
        out = ""
        if argv[:3] == ("docker", "image", "inspect"):
            ref = argv[-1]
            if ref in self.loaded:
                out = json.dumps([{"Id": self.loaded[ref]}])
            elif ref.startswith("sha256:"):
                out = json.dumps([self.inspect])
            else:
                return Result(argv, 1, "", "no such image", 0.0)
        elif argv[:2] == ("docker", "create"):
            out = "c0ffee\n"
        elif argv[:2] == ("skopeo", "copy"):
            layout = argv[-2].removeprefix("oci:").rpartition(":")[0]
            index = json.loads(Path(layout, "index.json").read_bytes())
            manifest = json.loads(
                Path(layout, "blobs/sha256", index["manifests"][0]["digest"][7:]).read_bytes()
            )
            self.loaded[argv[-1].removeprefix("docker-daemon:")] = manifest["config"]["digest"]
        return Result(argv, 0, out, "", 0.0)

    @contextlib.contextmanager
    def stream(self, call: Call) -> Iterator[IO[bytes]]:
        self.calls.append(call.argv)
        assert call.env == {"DOCKER_HOST": ENGINE.host}
        yield io.BytesIO(b"garbage" * 300 if self.fail_export else self.tar)


def normalize(fake: FakeEngine, work: Path, tag: str = "a") -> rp.Normalized:
    return rp.normalize(
        fake.run,
        ENGINE,
        "sha256:" + "1" * 64,
        epoch=EPOCH,
        repository="bake-repro/web",
        tag=tag,
        work=work,
        streamer=fake.stream,
    )


def test_normalize_exports_rewrites_writes_a_layout_and_loads_it(tmp_path: Path) -> None:
    fake = FakeEngine(tar_bytes(*ROOTFS, member(".dockerenv")))
    got = normalize(fake, tmp_path / "work")
    assert got.layout == (tmp_path / "work" / "oci").resolve()
    assert got.dropped == ("/.dockerenv",)
    create = fake.calls[1]
    assert create[:2] == ("docker", "create") and create[-1] == "sha256:" + "1" * 64
    assert ("docker", "export", "--", "c0ffee") in fake.calls
    assert ("docker", "rm", "-f", "-v", "--", "c0ffee") in fake.calls
    copy = next(c for c in fake.calls if c[0] == "skopeo")
    assert copy[-2:] == (f"oci:{got.layout}:a", "docker-daemon:bake-repro/web:a")
    assert copy[copy.index("--dest-daemon-host") + 1] == ENGINE.host
    # the layout: every blob named by its digest; the image ID is the config's digest
    blobs = got.layout / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert (got.layout / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    manifest = (blobs / got.manifest_digest[7:]).read_bytes()
    assert got.image_id == json.loads(manifest)["config"]["digest"]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["oci"]  # no scratch left


def test_normalize_twice_gives_the_same_digest_whatever_the_tag(tmp_path: Path) -> None:
    shuffled = list(ROOTFS)
    random.Random(7).shuffle(shuffled)
    shuffled.sort(key=lambda m: m[0].type == tarfile.LNKTYPE)
    a = normalize(FakeEngine(tar_bytes(*ROOTFS)), tmp_path / "a", "a")
    b = normalize(FakeEngine(tar_bytes(*shuffled, fmt=tarfile.GNU_FORMAT)), tmp_path / "b", "b")
    assert a.manifest_digest == b.manifest_digest
    assert a.image_id == b.image_id
    assert compare.diff_layers(a.layout, b.layout) == []
    again = normalize(FakeEngine(tar_bytes(*ROOTFS)), tmp_path / "a", "a")  # replaces the layout
    assert again == a


def test_normalize_removes_the_container_when_the_export_fails(tmp_path: Path) -> None:
    fake = FakeEngine(b"", fail_export=True)
    with pytest.raises(BakeError):
        normalize(fake, tmp_path / "work")
    assert fake.calls[-1] == ("docker", "rm", "-f", "-v", "--", "c0ffee")
    assert not any(c[0] == "skopeo" for c in fake.calls)
    assert list((tmp_path / "work").iterdir()) == []


# --- naming what differs -------------------------------------------------------------------


def test_diff_names_each_path_and_what_differs(tmp_path: Path) -> None:
    a = tar_bytes(
        member("etc/shadow", data=b"root:*:20783:::", mode=0o640),
        member("srv/www", tarfile.DIRTYPE, uid=1001),
        member("srv/www/index.html", data=b"hi", mtime=EARLIER),
        member("usr/bin/tool", data=b"x"),
        member("bin", tarfile.SYMTYPE, link="usr/bin"),
    )
    b = tar_bytes(
        member("etc/shadow", data=b"root:*:20784:::", mode=0o600),
        member("srv/www", tarfile.DIRTYPE, uid=1002, gid=5),
        member("srv/www/index.html", data=b"hi", mtime=EARLIER + 1),
        member("srv/www/new.html", data=b"new"),
        member("bin", tarfile.SYMTYPE, link="/usr/bin"),
    )
    lines = compare.diff_stats(compare.summarize(io.BytesIO(a)), compare.summarize(io.BytesIO(b)))
    assert lines == [
        "/bin: target usr/bin ≠ /usr/bin",
        "/etc/shadow: content; mode 0640 ≠ 0600",
        "/srv/www: owner 1001:0 ≠ 1002:5",
        f"/srv/www/index.html: mtime {EARLIER} ≠ {EARLIER + 1}",
        "/srv/www/new.html: missing in the first",
        "/usr/bin/tool: missing in the second",
    ]


def test_diff_layers_reads_two_layouts_and_names_config_and_files(tmp_path: Path) -> None:
    a = normalize(FakeEngine(tar_bytes(*ROOTFS)), tmp_path / "a", "a")
    changed = [
        m if m[0].name != "srv/www/index.html" else member(m[0].name, data=b"other", uid=1001, gid=1001)
        for m in ROOTFS
    ]
    inspect = {**INSPECT, "Config": {**INSPECT["Config"], "Env": ["LANG=C"]}}
    b = normalize(FakeEngine(tar_bytes(*changed), inspect=inspect), tmp_path / "b", "b")
    assert compare.diff_layers(a.layout, b.layout) == ["config: Env differs", "/srv/www/index.html: content"]


def test_diff_layers_says_what_is_wrong_with_a_folder_that_is_no_layout(tmp_path: Path) -> None:
    with pytest.raises(BakeError, match="not an OCI image layout"):
        compare.diff_layers(tmp_path, tmp_path)


# --- compiled Python modules stay valid ----------------------------------------------------


def pyc(mtime: int, size: int, flags: int = 0) -> bytes:
    fields = (flags, mtime & 0xFFFFFFFF, size)
    return importlib.util.MAGIC_NUMBER + b"".join(x.to_bytes(4, "little") for x in fields) + b"code"


def test_a_pyc_records_the_clamped_mtime_of_its_source() -> None:
    source = b"print('hi')\n"
    data = tar_bytes(
        member("usr/lib/python3/dist-packages/m.py", data=source, mtime=LATER),
        member("usr/lib/python3/dist-packages/__pycache__/m.cpython-311.pyc", data=pyc(LATER, len(source))),
        member("usr/lib/python3/dist-packages/old.py", data=source, mtime=EARLIER),
        member(
            "usr/lib/python3/dist-packages/__pycache__/old.cpython-311.pyc", data=pyc(EARLIER, len(source))
        ),
        member("srv/stale.py", data=source, mtime=LATER),
        member("srv/stale.pyc", data=pyc(LATER - 5, len(source))),  # stale already: left so
        member("etc/python3/sitecustomize.py", data=source, mtime=LATER),
        member("usr/lib/python3/sitecustomize.py", tarfile.SYMTYPE, link="/etc/python3/sitecustomize.py"),
        member("usr/lib/python3/__pycache__/sitecustomize.cpython-311.pyc", data=pyc(LATER, len(source))),
        member("srv/hashed.py", data=source, mtime=LATER),
        member("srv/hashed.pyc", data=pyc(LATER, len(source), flags=3)),  # checked by hash
    )
    out, layer = rewrite(data)
    assert content_of(out, "usr/lib/python3/dist-packages/__pycache__/m.cpython-311.pyc") == pyc(
        EPOCH, len(source)
    )
    assert content_of(out, "usr/lib/python3/dist-packages/__pycache__/old.cpython-311.pyc") == pyc(
        EARLIER, len(source)
    )
    assert content_of(out, "usr/lib/python3/__pycache__/sitecustomize.cpython-311.pyc") == pyc(
        EPOCH, len(source)
    )
    assert content_of(out, "srv/stale.pyc") == pyc(LATER - 5, len(source))
    assert content_of(out, "srv/hashed.pyc") == pyc(LATER, len(source), flags=3)
    assert layer.rewritten == ()


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("usr/lib/python3.11/json/__pycache__/decoder.cpython-311.pyc", "usr/lib/python3.11/json/decoder.py"),
        ("srv/app/__pycache__/main.cpython-311.opt-1.pyc", "srv/app/main.py"),
        ("srv/app/main.pyc", "srv/app/main.py"),
        ("srv/app/main.py", None),
    ],
)
def test_pyc_source(path: str, source: str | None) -> None:
    assert rp.pyc_source(path) == source


# --- clean images: no builder leftovers, a PATH, annotations ------------------------------


def test_an_image_without_path_gets_the_default_one_first() -> None:
    diff_id = "sha256:" + "3" * 64
    bare = {**INSPECT, "Config": {**INSPECT["Config"], "Env": ["LANG=C.UTF-8"]}}
    env = json.loads(rp.image_config(bare, diff_id, EPOCH))["config"]["Env"]
    assert env == [rp.DEFAULT_PATH, "LANG=C.UTF-8"]
    imported = {**INSPECT, "Config": {"Env": None}}  # `docker import`: no Env at all
    assert json.loads(rp.image_config(imported, diff_id, EPOCH))["config"]["Env"] == [rp.DEFAULT_PATH]
    # an image's own PATH is kept as it is
    own = json.loads(rp.image_config(INSPECT, diff_id, EPOCH))["config"]["Env"]
    assert own == ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]


def test_packer_files_mount_point_is_dropped() -> None:
    rules = rp.Rules.of(EPOCH)
    assert rules.drops("/packer-files", is_dir=True)
    assert rules.drops("/packer-files/x.sh", is_dir=False)
    assert not rules.drops("/srv/packer-files", is_dir=True)


def test_annotations_come_from_the_inputs_and_go_on_the_manifest() -> None:
    parent = "sha256:" + "5" * 64
    notes = rp.image_annotations(
        epoch=EPOCH,
        version="1.4.0",
        revision="sha256:" + "6" * 64,
        source="bake:recipe/web@1.4.0",
        base_name="bake/debian-base:1.0.0",
        base_digest=parent,
    )
    assert notes == {
        "org.opencontainers.image.created": "2020-01-01T00:00:00Z",
        "org.opencontainers.image.version": "1.4.0",
        "org.opencontainers.image.revision": "sha256:" + "6" * 64,
        "org.opencontainers.image.source": "bake:recipe/web@1.4.0",
        "org.opencontainers.image.base.name": "bake/debian-base:1.0.0",
        "org.opencontainers.image.base.digest": parent,
    }
    root = rp.image_annotations(epoch=EPOCH, version="1.0.0", revision="r", source="s")  # bootstrapped
    assert not any(k.endswith((".base.name", ".base.digest")) for k in root)
    layer = rp.Layer("sha256:" + "4" * 64, 1024, (), ())
    manifest = json.loads(rp.image_manifest(b"{}", layer, notes))
    assert manifest["annotations"] == notes
    assert rp.image_manifest(b"{}", layer, notes) == rp.image_manifest(
        b"{}", layer, dict(reversed(notes.items()))
    )


def test_normalize_annotates_the_manifest_it_writes(tmp_path: Path) -> None:
    notes = rp.image_annotations(epoch=EPOCH, version="1.4.0", revision="r", source="s")
    got = rp.normalize(
        FakeEngine(tar_bytes(*ROOTFS, member("packer-files", tarfile.DIRTYPE, mode=0o755))).run,
        ENGINE,
        "sha256:" + "1" * 64,
        epoch=EPOCH,
        repository="bake-repro/web",
        tag="a",
        work=tmp_path,
        streamer=FakeEngine(tar_bytes(*ROOTFS, member("packer-files", tarfile.DIRTYPE, mode=0o755))).stream,
        manifest_annotations=notes,
    )
    manifest = json.loads((got.layout / "blobs" / "sha256" / got.manifest_digest[7:]).read_bytes())
    assert manifest["annotations"] == notes
    assert "/packer-files" in got.dropped


def test_the_merged_filesystem_of_layers_applies_whiteouts(tmp_path: Path) -> None:
    lower = tmp_path / "lower.tar"
    lower.write_bytes(tar_bytes(*ROOTFS))
    upper = tmp_path / "upper.tar"
    upper.write_bytes(
        tar_bytes(
            member("srv", tarfile.DIRTYPE, mode=0o755),
            member("srv/.wh.www", data=b""),  # srv/www and what was below it: gone
            member("usr", tarfile.DIRTYPE, mode=0o755),
            member("usr/bin", tarfile.DIRTYPE, mode=0o755),
            member("usr/bin/.wh..wh..opq", data=b""),  # usr/bin emptied, then one file made
            member("usr/bin/new", data=b"new"),
            member("etc/passwd", data=b"changed\n"),
        )
    )
    merged = compare._merged([("a", lower), ("b", upper)])
    assert "/srv/www" not in merged and "/srv/www/index.html" not in merged
    assert "/srv/initctl" in merged and "/usr/bin" in merged
    assert sorted(p for p in merged if p.startswith("/usr/bin/")) == ["/usr/bin/new"]
    assert not any(".wh." in p for p in merged)
    assert merged["/etc/passwd"].sha256 == hashlib.sha256(b"changed\n").hexdigest()


# --- a child: the parent's layers kept, its own rewritten ----------------------------------

PARENT_LAYER = tar_bytes(*ROOTFS)
PARENT = "sha256:" + "2" * 64


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeChildEngine(FakeEngine):
    """Packer's image is the parent's layer plus one: `docker save` serves both."""

    def __init__(self, own: bytes, *, parent_history: str = rp.HISTORY_NOTE) -> None:
        raw = {**INSPECT, "RootFS": {"Type": "layers", "Layers": [_sha(PARENT_LAYER), _sha(own)]}}
        super().__init__(b"", inspect=raw)
        self.own, self.parent_history = own, parent_history

    def run(self, call: Call, on_line: process.LineSink | None = None) -> Result:
        argv = call.argv
        if argv[:3] == ("docker", "image", "inspect") and argv[-1] == PARENT:
            self.calls.append(argv)
            return Result(argv, 0, json.dumps([{"RootFS": {"Layers": [_sha(PARENT_LAYER)]}}]), "", 0.0)
        if argv[:2] == ("docker", "history"):
            self.calls.append(argv)
            return Result(argv, 0, self.parent_history + "\n", "", 0.0)
        if argv[:2] == ("docker", "load"):
            self.calls.append(argv)
            with tarfile.open(argv[-1]) as tar:
                names = tar.getnames()
                (entry,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
            assert f"{_sha(PARENT_LAYER)[7:]}/layer.tar" not in names  # the engine has it
            self.loaded[entry["RepoTags"][0]] = "sha256:" + entry["Config"].removesuffix(".json")
            return Result(argv, 0, "", "", 0.0)
        return super().run(call, on_line)

    @contextlib.contextmanager
    def stream(self, call: Call) -> Iterator[IO[bytes]]:
        self.calls.append(call.argv)
        assert call.argv[:2] == ("docker", "save")
        config = {
            "rootfs": {"type": "layers", "diff_ids": [_sha(PARENT_LAYER), _sha(self.own)]},
            "history": [
                {"created": "2020-01-01T00:00:00Z", "created_by": rp.HISTORY_NOTE},
                {"created_by": "sh"},
            ],
        }
        raw_config = json.dumps(config).encode()
        manifest = [{"Config": "c.json", "Layers": ["p/layer.tar", "o/layer.tar"]}]
        parts = [("p/layer.tar", PARENT_LAYER), ("o/layer.tar", self.own), ("c.json", raw_config)]
        parts.append(("manifest.json", json.dumps(manifest).encode()))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in parts:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        yield io.BytesIO(buf.getvalue())


def normalize_child(fake: FakeEngine, work: Path, layout: Path | None = None) -> rp.Normalized:
    return rp.normalize(
        fake.run,
        ENGINE,
        "sha256:" + "1" * 64,
        epoch=EPOCH,
        repository="bake-repro/web",
        tag="a",
        work=work,
        streamer=fake.stream,
        parent=rp.Parent(PARENT, layout),
    )


OWN_LAYER = tar_bytes(
    member("srv", tarfile.DIRTYPE, mode=0o755),
    member("srv/www/index.html", data=b"<h1>new</h1>\n"),
    member("srv/.wh.old", data=b""),
    member(".dockerenv"),
)


def test_a_child_keeps_its_parent_s_layer_and_rewrites_its_own(tmp_path: Path) -> None:
    fake = FakeChildEngine(OWN_LAYER)
    got = normalize_child(fake, tmp_path / "work")
    assert not any(
        c[:2] in (("docker", "create"), ("docker", "export")) or c[0] == "skopeo" for c in fake.calls
    )
    blobs = got.layout / "blobs" / "sha256"
    manifest = json.loads((blobs / got.manifest_digest[7:]).read_bytes())
    lower, own = manifest["layers"]
    assert lower["digest"] == _sha(PARENT_LAYER)
    assert (blobs / lower["digest"][7:]).read_bytes() == PARENT_LAYER  # kept, byte for byte
    assert (blobs / own["digest"][7:]).read_bytes() == rewrite(OWN_LAYER)[0]  # what a rewrite gives
    assert got.dropped == ("/.dockerenv",)
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    assert config["rootfs"]["diff_ids"] == [lower["digest"], own["digest"]]
    assert [h["created_by"] for h in config["history"]] == [rp.HISTORY_NOTE, rp.CHILD_NOTE]
    assert got.image_id == manifest["config"]["digest"]  # loaded by `docker load`
    for blob in blobs.iterdir():
        assert _sha(blob.read_bytes())[7:] == blob.name
    assert sorted(p.name for p in got.layout.iterdir()) == ["blobs", "index.json", "oci-layout"]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["oci"]
    # the same inputs give the same digest
    again = normalize_child(FakeChildEngine(OWN_LAYER), tmp_path / "again")
    assert again.manifest_digest == got.manifest_digest


def test_a_parent_bake_did_not_write_makes_one_layer_of_the_whole_filesystem(tmp_path: Path) -> None:
    fake = FakeChildEngine(OWN_LAYER, parent_history="/bin/sh -c #(nop) imported")
    fake.tar = tar_bytes(*ROOTFS)  # what `docker export` of the image serves
    fake.stream = FakeEngine.stream.__get__(fake)  # type: ignore[method-assign]
    got = normalize_child(fake, tmp_path / "work")
    manifest = json.loads((got.layout / "blobs" / "sha256" / got.manifest_digest[7:]).read_bytes())
    assert len(manifest["layers"]) == 1
    assert any(c[:2] == ("docker", "export") for c in fake.calls)


def parent_layout(tmp_path: Path, layer: bytes) -> Path:
    """An OCI layout of the parent as bake writes it: index, manifest, the layer's blob."""
    blobs = tmp_path / "parent" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / _sha(layer)[7:]).write_bytes(layer)
    manifest = json.dumps({"layers": [{"digest": _sha(PARENT_LAYER), "size": len(layer)}]}).encode()
    (blobs / _sha(manifest)[7:]).write_bytes(manifest)
    (tmp_path / "parent" / "index.json").write_text(json.dumps({"manifests": [{"digest": _sha(manifest)}]}))
    return tmp_path / "parent"


def test_a_child_links_the_parent_s_layer_from_its_layout(tmp_path: Path) -> None:
    layout = parent_layout(tmp_path, PARENT_LAYER)
    got = normalize_child(FakeChildEngine(OWN_LAYER), tmp_path / "work", layout)
    blob = got.layout / "blobs" / "sha256" / _sha(PARENT_LAYER)[7:]
    assert blob.stat().st_ino == (layout / "blobs" / "sha256" / _sha(PARENT_LAYER)[7:]).stat().st_ino
    assert (
        got.manifest_digest == normalize_child(FakeChildEngine(OWN_LAYER), tmp_path / "plain").manifest_digest
    )


def test_a_poisoned_parent_layout_is_read_past_and_the_image_is_the_same(tmp_path: Path) -> None:
    layout = parent_layout(tmp_path, PARENT_LAYER)
    poisoned = layout / "blobs" / "sha256" / _sha(PARENT_LAYER)[7:]
    poisoned.write_bytes(b"\0" * len(PARENT_LAYER))  # the same size, other bytes
    fake = FakeChildEngine(OWN_LAYER)
    got = normalize_child(fake, tmp_path / "work", layout)
    blob = got.layout / "blobs" / "sha256" / _sha(PARENT_LAYER)[7:]
    assert blob.read_bytes() == PARENT_LAYER  # what the engine holds, not the cache
    assert sum(c[:2] == ("docker", "save") for c in fake.calls) == 2  # read again, in full
    assert (
        got.manifest_digest == normalize_child(FakeChildEngine(OWN_LAYER), tmp_path / "plain").manifest_digest
    )
