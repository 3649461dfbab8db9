"""Edits of existing files: lineinfile, blockinfile, and sysctl and cron built on them.

The edit itself is an awk program (mawk is in every Debian image) fixed in this module;
the recipe's values reach it through the environment (``ENVIRON``), never as program
text, so a quote or backslash in a line cannot change what the program does. The new
content goes to a temporary file and replaces the file's content (same inode, mode and
owner) only when it differs. Regular expressions are POSIX extended ones, as awk reads
them.
"""

from __future__ import annotations

import re
import shlex

from bake.compile.modules import ensure_attrs

q = shlex.quote

# Ansible's lineinfile: the last line matching `regexp` becomes `line`; without a match
# (and without the exact line anywhere) `line` goes after the last match of `insertafter`,
# before the last match of `insertbefore`, at the top (BOF) or at the end (EOF).
LINE_PRESENT = r"""{ a[NR] = $0 }
END {
  line = ENVIRON["BAKE_LINE"]; re = ENVIRON["BAKE_REGEXP"]
  after = ENVIRON["BAKE_AFTER"]; before = ENVIRON["BAKE_BEFORE"]
  m = 0
  if (re != "") for (i = 1; i <= NR; i++) if (a[i] ~ re) m = i
  if (m == 0) for (i = 1; i <= NR; i++) if (a[i] == line) m = -1
  if (m > 0) a[m] = line
  at = NR
  if (before == "BOF") at = 0
  else if (before != "") { for (i = 1; i <= NR; i++) if (a[i] ~ before) at = i - 1 }
  else if (after != "" && after != "EOF") { for (i = 1; i <= NR; i++) if (a[i] ~ after) at = i }
  if (m == 0 && at == 0) print line
  for (i = 1; i <= NR; i++) { print a[i]; if (m == 0 && i == at) print line }
}"""

LINE_ABSENT = r"""BEGIN { line = ENVIRON["BAKE_LINE"]; re = ENVIRON["BAKE_REGEXP"] }
(re != "" && $0 ~ re) || (re == "" && $0 == line) { next }
{ print }"""

# blockinfile: the lines between the BEGIN and END markers are the block; it is replaced
# where it is, or (new) placed like lineinfile's line. An empty block removes it.
BLOCK = r"""{ a[NR] = $0 }
END {
  b = ENVIRON["BAKE_BEGIN"]; e = ENVIRON["BAKE_END"]; blk = ENVIRON["BAKE_BLOCK"]
  after = ENVIRON["BAKE_AFTER"]; before = ENVIRON["BAKE_BEFORE"]
  n = 0; s = -1; inside = 0
  for (i = 1; i <= NR; i++) {
    if (!inside && a[i] == b) { inside = 1; if (s < 0) s = n; continue }
    if (inside) { if (a[i] == e) inside = 0; continue }
    k[++n] = a[i]
  }
  at = s
  if (at < 0) {
    at = n
    if (before == "BOF") at = 0
    else if (before != "") { for (i = 1; i <= n; i++) if (k[i] ~ before) at = i - 1 }
    else if (after != "" && after != "EOF") { for (i = 1; i <= n; i++) if (k[i] ~ after) at = i }
  }
  for (i = 0; i <= n; i++) {
    if (i > 0) print k[i]
    if (i == at && blk != "") { print b; print blk; print e }
  }
}"""


def _edit(
    path: str,
    program: str,
    env: dict[str, str],
    *,
    create: bool,
    must_exist: bool,
    mode: str | None,
    owner: str | None,
    group: str | None,
    what: str,
) -> str:
    """Run the awk ``program`` over ``path`` and replace its content when it changed."""
    assigns = " ".join(f"{k}={q(v)}" for k, v in env.items())
    edit = (
        "tmp=$(mktemp)\n"
        f'{assigns} awk {q(program)} {q(path)} >"$tmp"\n'
        f'if cmp -s "$tmp" {q(path)}; then\n'
        '  rm -f "$tmp"\n'
        "else\n"
        f'  cat "$tmp" >{q(path)}\n'
        '  rm -f "$tmp"\n'
        "  BAKE_CHANGED=1\n"
        "fi\n"
    )
    attrs = ensure_attrs(path, mode, owner, group)
    if create:
        missing = (
            f'  mkdir -p "$(dirname {q(path)})"\n'
            f"  : >{q(path)}\n"
            f"  chmod {q(mode or '0644')} {q(path)}\n"
            "  BAKE_CHANGED=1\n"
        )
        return f"if [ ! -e {q(path)} ]; then\n{missing}fi\n{edit}{attrs}"
    if must_exist:
        msg = f"{what}: {path} does not exist; set `create: true` to make it"
        return f"if [ ! -e {q(path)} ]; then\n  echo {q(msg)} >&2\n  exit 1\nfi\n{edit}{attrs}"
    body = edit + attrs
    return f"if [ -e {q(path)} ]; then\n" + "".join(f"  {x}\n" for x in body.splitlines()) + "fi\n"


def lineinfile(
    path: str,
    line: str | None,
    regexp: str | None,
    state: str,
    insertafter: str | None,
    insertbefore: str | None,
    create: bool,
    mode: str | None,
    owner: str | None,
    group: str | None,
) -> str:
    if state == "absent":
        env = {"BAKE_LINE": line or "", "BAKE_REGEXP": regexp or ""}
        return _edit(
            path,
            LINE_ABSENT,
            env,
            create=False,
            must_exist=False,
            mode=mode,
            owner=owner,
            group=group,
            what="lineinfile",
        )
    env = {
        "BAKE_LINE": line or "",
        "BAKE_REGEXP": regexp or "",
        "BAKE_AFTER": insertafter or "",
        "BAKE_BEFORE": insertbefore or "",
    }
    return _edit(
        path,
        LINE_PRESENT,
        env,
        create=create,
        must_exist=True,
        mode=mode,
        owner=owner,
        group=group,
        what="lineinfile",
    )


def blockinfile(
    path: str,
    block: str,
    marker: str,
    state: str,
    insertafter: str | None,
    insertbefore: str | None,
    create: bool,
    mode: str | None,
    owner: str | None,
    group: str | None,
) -> str:
    text = block.rstrip("\n") if state == "present" else ""
    env = {
        "BAKE_BEGIN": marker.replace("{mark}", "BEGIN"),
        "BAKE_END": marker.replace("{mark}", "END"),
        "BAKE_BLOCK": text,
        "BAKE_AFTER": insertafter or "",
        "BAKE_BEFORE": insertbefore or "",
    }
    present = bool(text)
    return _edit(
        path,
        BLOCK,
        env,
        create=create and present,
        must_exist=present,
        mode=mode,
        owner=owner,
        group=group,
        what="blockinfile",
    )


def ere_escape(text: str) -> str:
    """``text`` as a POSIX extended regular expression that matches it literally."""
    return re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", text)


def sysctl(name: str, value: str, file: str, state: str, reload: bool) -> str:
    regexp = rf"^[[:space:]]*{ere_escape(name)}[[:space:]]*="
    body = lineinfile(file, f"{name} = {value}", regexp, state, None, None, True, "0644", "root", "root")
    if reload and state == "present":
        body += f'if [ "$BAKE_CHANGED" = 1 ]; then sysctl -q -p {q(file)}; fi\n'
    return body


def cron_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-") or "job"


def cron_path(name: str, cron_file: str | None) -> str:
    if cron_file is None:
        return f"/etc/cron.d/bake-{cron_slug(name)}"
    return cron_file if cron_file.startswith("/") else f"/etc/cron.d/{cron_file}"


def cron(
    name: str,
    job: str | None,
    schedule: str,
    user: str,
    cron_file: str | None,
    state: str,
) -> str:
    """One entry in a file under /etc/cron.d (the format with a user field), between
    marker lines that name it, so entries sharing a file are changed one by one."""
    path = cron_path(name, cron_file)
    block = f"{schedule} {user} {job}" if state == "present" else ""
    return blockinfile(
        path, block, f"# {{mark}} bake cron: {name}", state, None, None, True, "0644", "root", "root"
    )
