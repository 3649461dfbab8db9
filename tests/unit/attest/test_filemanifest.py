"""bake.attest.filemanifest: the tar and find collectors, volatile paths, the signed manifest."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from bake.attest import filemanifest as fm
from bake.attest.digest import sha256_bytes
from bake.attest.filemanifest import Entry
from bake.attest.keys import SigningKey
from bake.attest.statements import sign_statement
from bake.errors import BakeError, TrustError
from bake.targets.docker.engine import Engine
from tests.tars import member, pipe, tar_bytes

IMAGE = sha256_bytes(b"image")
ENGINE = Engine("unix:///test/docker.sock")
VOL = fm.volatile_set()


def hexsha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- tar collector -----------------------------------------------------------------------


def test_tar_entries_describe_every_kind_of_member() -> None:
    data = tar_bytes(
        member("./", tarfile.DIRTYPE, mode=0o755),
        member("etc", tarfile.DIRTYPE, mode=0o755),
        member("etc/passwd", data=b"root:x:0:0\n"),
        member("usr/bin/su", data=b"\x7fELF", mode=0o4755),
        member("srv/www", tarfile.DIRTYPE, mode=0o2750, uid=1001, gid=33),
        member("bin", tarfile.SYMTYPE, mode=0o777, link="usr/bin"),
        member("run/fifo", tarfile.FIFOTYPE),
        member("srv/null", tarfile.CHRTYPE, mode=0o666),
    )
    entries = list(fm.tar_entries(pipe(data), frozenset()))
    assert entries == [
        Entry("/etc", "dir", 0o755, 0, 0),
        Entry("/etc/passwd", "file", 0o644, 0, 0, sha256=hexsha(b"root:x:0:0\n")),
        Entry("/usr/bin/su", "file", 0o4755, 0, 0, sha256=hexsha(b"\x7fELF")),
        Entry("/srv/www", "dir", 0o2750, 1001, 33),
        Entry("/bin", "symlink", 0o777, 0, 0, target="usr/bin"),
        Entry("/run/fifo", "other", 0o644, 0, 0),
        Entry("/srv/null", "other", 0o666, 0, 0),
    ]


def test_tar_entries_skip_volatile_members_and_their_contents() -> None:
    data = tar_bytes(
        member("proc", tarfile.DIRTYPE),
        member("var/log/syslog", data=b"x" * 5000),
        member("var/logger", data=b"kept"),  # a sibling of /var/log, not below it
        member(".dockerenv"),
        member("etc/hosts", data=b"127.0.0.1 localhost\n"),
    )
    paths = [e.path for e in fm.tar_entries(pipe(data), VOL)]
    assert paths == ["/var/logger"]


def test_a_hard_link_has_the_digest_of_the_file_it_links_to() -> None:
    data = tar_bytes(
        member("usr/bin/perl5.36", data=b"perl"),
        member("usr/bin/perl", tarfile.LNKTYPE, mode=0o755, link="usr/bin/perl5.36"),
        member("tmp/x", data=b"volatile"),
        member("usr/bin/dangling", tarfile.LNKTYPE, link="tmp/x"),
    )
    by_path = {e.path: e for e in fm.tar_entries(pipe(data), VOL)}
    assert by_path["/usr/bin/perl"] == Entry("/usr/bin/perl", "file", 0o755, 0, 0, sha256=hexsha(b"perl"))
    assert by_path["/usr/bin/dangling"].sha256 is None  # its target was skipped: unknown


def hashing_peak(folder: Path, size: int) -> int:
    tar_file = folder / f"big-{size}.tar"
    with tarfile.open(tar_file, "w") as tar:
        info = tarfile.TarInfo("var/lib/big.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(b"\xab" * size))
    with tar_file.open("rb") as f:
        tracemalloc.start()
        try:
            (entry,) = fm.tar_entries(f, VOL)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert entry.sha256 == hexsha(b"\xab" * size)
    return peak


def test_big_files_are_hashed_in_chunks_with_flat_memory(tmp_path: Path) -> None:
    small, big = hashing_peak(tmp_path, 4 * fm.CHUNK), hashing_peak(tmp_path, 32 * fm.CHUNK)
    # A few chunk-sized buffers (tarfile's stream copies), whatever the file's size.
    assert big < 6 * fm.CHUNK, f"peak {big / fm.CHUNK:.1f} MiB hashing a 32 MiB file"
    assert big - small < fm.CHUNK


def listing_peak(files: int) -> int:
    data = tar_bytes(*(member(f"etc/f{i}", data=b"%d" % i) for i in range(files)))
    tracemalloc.start()
    try:
        assert sum(1 for _ in fm.tar_entries(pipe(data), VOL)) == files
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_tarfile_does_not_keep_every_header() -> None:
    per_file = (listing_peak(6000) - listing_peak(2000)) / 4000
    # One digest per file is kept for hard links (~200 bytes); tarfile would keep each
    # header too (~650 bytes with them).
    assert per_file < 400


def test_a_stream_that_is_not_a_tar_is_a_clear_error() -> None:
    with pytest.raises(BakeError, match="cannot read the filesystem stream as a tar"):
        list(fm.tar_entries(pipe(b"Error response from daemon: no such container\n" * 20), VOL))


# --- find collector ----------------------------------------------------------------------


def rec(kind: str, mode: str, path: bytes, target: bytes = b"", uid: int = 0, gid: int = 0) -> bytes:
    return b"@%s %s %d %d %s\0%s\0" % (kind.encode(), mode.encode(), uid, gid, path, target)


def summed(data: bytes, path: bytes, marker: bytes = b" ") -> bytes:
    return hexsha(data).encode() + b" " + marker + path + b"\0"


FIND_OUTPUT = b"".join(
    [
        rec("d", "755", b"/etc"),
        rec("f", "644", b"/etc/passwd"),
        rec("l", "777", b"/bin", b"usr/bin"),
        rec("f", "4755", b"/usr/bin/su"),
        summed(b"root\n", b"/etc/passwd"),
        summed(b"su", b"/usr/bin/su", b"*"),
        summed(b"early", b"/srv/odd name\nwith newline"),  # a digest before its record
        rec("f", "600", b"/srv/odd name\nwith newline", uid=1001, gid=1001),
        rec("f", "644", b"/srv/caf\xe9"),  # not UTF-8
        summed(b"cafe", b"/srv/caf\xe9"),
        rec("p", "644", b"/srv/fifo"),
        rec("l", "777", b"/srv/@link", b"@target with spaces"),
    ]
)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1 << 16])
def test_find_entries_parse_records_and_batches(chunk_size: int) -> None:
    entries = {e.path: e for e in fm.find_entries(pipe(FIND_OUTPUT), chunk_size=chunk_size)}
    assert entries == {
        "/etc": Entry("/etc", "dir", 0o755, 0, 0),
        "/etc/passwd": Entry("/etc/passwd", "file", 0o644, 0, 0, sha256=hexsha(b"root\n")),
        "/bin": Entry("/bin", "symlink", 0o777, 0, 0, target="usr/bin"),
        "/usr/bin/su": Entry("/usr/bin/su", "file", 0o4755, 0, 0, sha256=hexsha(b"su")),
        "/srv/odd name\nwith newline": Entry(
            "/srv/odd name\nwith newline", "file", 0o600, 1001, 1001, sha256=hexsha(b"early")
        ),
        "/srv/caf\udce9": Entry("/srv/caf\udce9", "file", 0o644, 0, 0, sha256=hexsha(b"cafe")),
        "/srv/fifo": Entry("/srv/fifo", "other", 0o644, 0, 0),
        "/srv/@link": Entry("/srv/@link", "symlink", 0o777, 0, 0, target="@target with spaces"),
    }


def test_find_and_tar_describe_the_same_files_alike() -> None:
    tar = tar_bytes(member("etc/passwd", data=b"root\n"), member("bin", tarfile.SYMTYPE, link="usr/bin"))
    out = (
        rec("f", "644", b"/etc/passwd")
        + rec("l", "777", b"/bin", b"usr/bin")
        + summed(b"root\n", b"/etc/passwd")
    )
    from_tar = sorted(fm.tar_entries(pipe(tar), VOL), key=lambda e: e.path)
    from_find = sorted(fm.find_entries(pipe(out)), key=lambda e: e.path)
    # Symlink permission bits are 0777 on Linux whatever a tar header says.
    assert [e.path for e in from_tar] == [e.path for e in from_find]
    assert from_tar[1] == from_find[1]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (rec("f", "644", b"/etc/passwd")[:-1], "ends in the middle of a record"),
        (rec("f", "644", b"/etc/passwd"), "1 file\\(s\\) without a digest"),
        (summed(b"x", b"/etc/x"), "1 digest\\(s\\) without a file"),
        (b"not a digest line\0", "unexpected sha256sum output"),
        (b"@f 9z9 0 0 /etc/passwd\0\0", "unexpected find record"),
        (b"@f 644 0 0 relative\0\0", "unexpected find record"),
    ],
)
def test_find_output_that_is_not_ours_is_refused(output: bytes, message: str) -> None:
    with pytest.raises(BakeError, match=message):
        list(fm.find_entries(pipe(output)))


def test_find_command_prunes_volatile_paths_and_hashes_in_batches() -> None:
    argv = fm.find_argv(fm.volatile_set(["/srv/cache[1]"]))
    assert argv[:5] == ("find", "/", "-xdev", "-mindepth", "1")
    assert "/srv/cache\\[1\\]" in argv  # -path takes a glob: brackets escaped
    assert argv[argv.index("-prune") - 1] == ")"
    assert argv[-9:] == ("(", "-type", "f", "-exec", "sha256sum", "-z", "{}", "+", ")")
    assert fm.find_command(VOL).startswith("env LC_ALL=C find / ")


# --- volatile paths ----------------------------------------------------------------------


def test_volatile_set_adds_recipe_paths_to_the_defaults() -> None:
    vol = fm.volatile_set(["/srv/cache/", "/var//spool/../spool"])
    assert {"/proc", "/etc/resolv.conf", "/.dockerenv", "/srv/cache", "/var/spool"} <= vol


@pytest.mark.parametrize("bad", ["srv/cache", "/", "//", "/srv/.."])
def test_volatile_paths_must_be_absolute_and_not_the_root(bad: str) -> None:
    with pytest.raises(BakeError):
        fm.volatile_set([bad])


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/var/log", True), ("/var/log/nginx/access.log", True), ("/var/logger", False), ("/var", False)],
)
def test_is_volatile_means_the_path_or_below(path: str, expected: bool) -> None:
    assert fm.is_volatile(path, VOL) is expected


# --- the signed statement ----------------------------------------------------------------

ENTRIES = [
    Entry("/usr/bin/su", "file", 0o4755, 0, 0, sha256=hexsha(b"su")),
    Entry("/bin", "symlink", 0o777, 0, 0, target="usr/bin"),
    Entry("/srv/caf\udce9", "file", 0o640, 1001, 33, sha256=hexsha(b"x")),
    Entry("/etc", "dir", 0o755, 0, 0),
]


def test_manifest_statement_round_trips_through_a_signature() -> None:
    key = SigningKey.generate()
    stmt = fm.manifest_statement(IMAGE, ENTRIES, ["/proc", "/srv/cache"], name="web")
    assert stmt["predicateType"] == fm.FILE_MANIFEST
    assert stmt["subject"] == [{"name": "web", "digest": {"sha256": IMAGE.removeprefix("sha256:")}}]
    opened = fm.open_manifest(sign_statement(stmt, key), [key.public], image_digest=IMAGE)
    assert opened.entries == tuple(sorted(ENTRIES, key=lambda e: e.path))
    assert opened.volatile == ("/proc", "/srv/cache")


def test_the_predicate_is_canonical_and_readable() -> None:
    predicate = fm.manifest_predicate(reversed(ENTRIES), ["/b", "/a"])
    assert predicate == fm.manifest_predicate(ENTRIES, ["/a", "/b"])
    entries = predicate["entries"]
    assert isinstance(entries, list)
    assert entries[0] == {
        "path": "/bin",
        "type": "symlink",
        "mode": "0777",
        "uid": 0,
        "gid": 0,
        "target": "usr/bin",
    }
    assert entries[2] == {
        "pathBase64": base64.b64encode(b"/srv/caf\xe9").decode(),
        "type": "file",
        "mode": "0640",
        "uid": 1001,
        "gid": 33,
        "sha256": hexsha(b"x"),
    }
    json.dumps(predicate, ensure_ascii=False).encode("utf-8")  # no lone surrogates left


def test_a_manifest_lists_each_path_once() -> None:
    with pytest.raises(BakeError, match="lists /etc twice"):
        fm.manifest_predicate([*ENTRIES, Entry("/etc", "dir", 0o700, 0, 0)], [])


def tampered(envelope: dict[str, object]) -> dict[str, object]:
    payload = base64.b64decode(str(envelope["payload"]))
    payload = payload.replace(b'"mode":"4755"', b'"mode":"0755"')
    return {**envelope, "payload": base64.b64encode(payload).decode()}


def test_open_manifest_refuses_what_it_cannot_trust() -> None:
    key, stranger = SigningKey.generate(), SigningKey.generate()
    env = sign_statement(fm.manifest_statement(IMAGE, ENTRIES, []), key)
    with pytest.raises(TrustError, match=r"altered or corrupted|does not verify"):
        fm.open_manifest(tampered(env), [key.public], image_digest=IMAGE)
    with pytest.raises(TrustError, match="no valid signature"):
        fm.open_manifest(env, [stranger.public], image_digest=IMAGE)
    with pytest.raises(TrustError, match="is not about"):
        fm.open_manifest(env, [key.public], image_digest=sha256_bytes(b"another image"))


def test_open_manifest_refuses_other_statements() -> None:
    from bake.attest.statements import statement

    key = SigningKey.generate()
    env = sign_statement(statement([("web", IMAGE)], "https://example.invalid/other", {}), key)
    with pytest.raises(TrustError, match="not a file manifest"):
        fm.open_manifest(env, [key.public], image_digest=IMAGE)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("x", "entries\\[3\\] is not an object"),
        ({"path": "/a", "type": "file", "mode": "644", "uid": 0, "gid": 0}, "mode must be 4 octal"),
        ({"path": "a", "type": "dir", "mode": "0755", "uid": 0, "gid": 0}, "path is missing or not absolute"),
        ({"path": "/a", "type": "pipe", "mode": "0755", "uid": 0, "gid": 0}, "type must be one of"),
        ({"path": "/a", "type": "dir", "mode": "0755", "uid": -1, "gid": 0}, "non-negative integers"),
        ({"path": "/a", "type": "dir", "mode": "0755", "uid": True, "gid": 0}, "non-negative integers"),
        (
            {"path": "/a", "type": "file", "mode": "0644", "uid": 0, "gid": 0},
            "sha256 belongs to regular files",
        ),
        ({"path": "/a", "type": "symlink", "mode": "0777", "uid": 0, "gid": 0}, "target belongs to symlinks"),
        (
            {"path": "/a", "type": "dir", "mode": "0755", "uid": 0, "gid": 0, "size": 1},
            "unknown field\\(s\\) size",
        ),
        ({"pathBase64": "!!", "type": "dir", "mode": "0755", "uid": 0, "gid": 0}, "not valid base64"),
    ],
)
def test_entry_from_json_names_the_field(raw: object, message: str) -> None:
    with pytest.raises(TrustError, match=message):
        fm.entry_from_json(raw, "entries[3]")


@pytest.mark.parametrize("entry", ENTRIES)
def test_entry_json_round_trips(entry: Entry) -> None:
    assert fm.entry_from_json(fm.entry_to_json(entry), "e") == entry
