"""The generated module scripts, run for real with /bin/sh and awk on files in a temp
folder: what they change, that a second run changes nothing and says `ok`."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from bake.compile import edits, modules
from bake.compile.steps import tracking
from bake.errors import ToolError
from bake.infra import process


def run(body: str) -> str:
    """The body as bake runs it (set -eu, changed/ok at the end); what it printed."""
    script = "set -eu\n" + tracking(()) + body
    return process.run(process.Call(argv=("/bin/sh", "-c", script))).stdout.strip().splitlines()[-1]


def twice(body: str) -> None:
    assert run(body) == "bake: changed"
    assert run(body) == "bake: ok"


def test_lineinfile_replaces_the_last_match_and_is_idempotent(tmp_path: Path) -> None:
    conf = tmp_path / "a.conf"
    conf.write_text("port = 1\n# port = 2\nport = 3\nname = x\n")
    twice(
        edits.lineinfile(str(conf), "port = 8080", "^port *=", "present", None, None, False, None, None, None)
    )
    assert conf.read_text() == "port = 1\n# port = 2\nport = 8080\nname = x\n"


def test_lineinfile_inserts_after_before_or_at_the_top(tmp_path: Path) -> None:
    conf = tmp_path / "a.conf"
    conf.write_text("[main]\nx = 1\n[other]\n")
    twice(edits.lineinfile(str(conf), "y = 2", "^y =", "present", "^x =", None, False, None, None, None))
    twice(edits.lineinfile(str(conf), "# top", None, "present", None, "BOF", False, None, None, None))
    twice(edits.lineinfile(str(conf), "z = 3", None, "present", None, r"^\[other\]", False, None, None, None))
    assert conf.read_text() == "# top\n[main]\nx = 1\ny = 2\nz = 3\n[other]\n"


def test_lineinfile_keeps_a_line_that_is_there_and_takes_quotes_literally(tmp_path: Path) -> None:
    conf = tmp_path / "a.conf"
    line = 'say = "it\'s $HOME" \\n `x`'
    conf.write_text(line + "\n")
    assert (
        run(edits.lineinfile(str(conf), line, None, "present", None, None, False, None, None, None))
        == "bake: ok"
    )
    assert conf.read_text() == line + "\n"


def test_lineinfile_absent_and_create(tmp_path: Path) -> None:
    conf = tmp_path / "sub" / "new.conf"
    twice(edits.lineinfile(str(conf), "a = 1", None, "present", None, None, True, "0600", None, None))
    assert conf.read_text() == "a = 1\n" and oct(conf.stat().st_mode)[-3:] == "600"
    twice(edits.lineinfile(str(conf), None, "^a", "absent", None, None, False, None, None, None))
    assert conf.read_text() == ""
    missing = tmp_path / "none.conf"
    body = edits.lineinfile(str(missing), "a", None, "present", None, None, False, None, None, None)
    with pytest.raises(ToolError, match="does not exist; set `create: true`"):
        run(body)


def test_blockinfile_replaces_its_block_in_place_and_removes_it(tmp_path: Path) -> None:
    conf = tmp_path / "a.conf"
    conf.write_text("first\nlast\n")
    marker = "# {mark} MANAGED BY BAKE"
    twice(edits.blockinfile(str(conf), "a\nb\n", marker, "present", "^first", None, False, None, None, None))
    assert conf.read_text() == "first\n# BEGIN MANAGED BY BAKE\na\nb\n# END MANAGED BY BAKE\nlast\n"
    twice(edits.blockinfile(str(conf), "c", marker, "present", None, None, False, None, None, None))
    assert conf.read_text() == "first\n# BEGIN MANAGED BY BAKE\nc\n# END MANAGED BY BAKE\nlast\n"
    twice(edits.blockinfile(str(conf), "", marker, "absent", None, None, False, None, None, None))
    assert conf.read_text() == "first\nlast\n"


@pytest.mark.skipif(os.getuid() != 0, reason="sysctl and cron files belong to root")
def test_sysctl_and_cron_edit_their_files(tmp_path: Path) -> None:
    conf = tmp_path / "99-bake.conf"
    conf.write_text("net.core.somaxconn=128\nvm.swappiness = 60\n")
    twice(edits.sysctl("net.core.somaxconn", "1024", str(conf), "present", False))
    assert conf.read_text() == "net.core.somaxconn = 1024\nvm.swappiness = 60\n"
    cron = tmp_path / "jobs"
    twice(edits.cron("sweep", "/bin/true", "*/5 * * * *", "root", str(cron), "present"))
    twice(edits.cron("other", "/bin/false", "@daily", "root", str(cron), "present"))
    assert cron.read_text() == (
        "# BEGIN bake cron: sweep\n*/5 * * * * root /bin/true\n# END bake cron: sweep\n"
        "# BEGIN bake cron: other\n@daily root /bin/false\n# END bake cron: other\n"
    )
    twice(edits.cron("sweep", None, "*/5 * * * *", "root", str(cron), "absent"))
    assert "sweep" not in cron.read_text() and "other" in cron.read_text()


def _me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def test_file_states(tmp_path: Path) -> None:
    d = tmp_path / "d"
    me = _me()
    twice(modules.directory(str(d), "0750", me, me))
    assert d.is_dir() and oct(d.stat().st_mode)[-3:] == "750"
    link = tmp_path / "l"
    twice(modules.link(str(link), str(d)))
    assert link.is_symlink() and link.resolve() == d
    twice(modules.absent(str(link)))
    assert not link.exists() and not link.is_symlink()
    with pytest.raises(ToolError, match="is a directory, not a link"):
        run(modules.link(str(d), "/elsewhere"))


def test_install_file_changes_only_when_content_or_mode_differ(tmp_path: Path) -> None:
    me = _me()
    dest = tmp_path / "etc" / "x.conf"
    up = tmp_path / "upload"
    for content, mode, said in (
        ("a\n", "0644", "changed"),
        ("a\n", "0644", "ok"),
        ("b\n", "0644", "changed"),
        ("b\n", "0600", "changed"),
        ("b\n", "0600", "ok"),
    ):
        up.write_text(content)
        assert run(modules.install_file(str(up), str(dest), mode, me, me)) == f"bake: {said}"
        assert not up.exists() and dest.read_text() == content
