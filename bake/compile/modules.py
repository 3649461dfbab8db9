"""Module bodies: the shell that does one module's work, idempotently.

Each body checks before it changes and sets ``BAKE_CHANGED=1`` only when it changed
something; the script around it (:mod:`bake.compile.steps`) reports `changed` or `ok` and
notifies handlers from that. Every value from a recipe goes through shlex.quote; the
generated text is plain POSIX sh and the tools every Debian image has (coreutils,
diffutils, mawk, tar, apt).
"""

from __future__ import annotations

import shlex

q = shlex.quote


def octal(mode: str) -> str:
    """ "0644" → "644", as `stat -c %a` prints it."""
    return f"{int(mode, 8):o}"


def ensure_attrs(path: str, mode: str | None, owner: str | None, group: str | None) -> str:
    """Fix mode and ownership of an existing path when they differ."""
    parts: list[tuple[str, str]] = []
    if mode is not None:
        parts.append(("%a", octal(mode)))
    if owner is not None:
        parts.append(("%u" if owner.isdigit() else "%U", owner))
    if group is not None:
        parts.append(("%g" if group.isdigit() else "%G", group))
    if not parts:
        return ""
    fmt = " ".join(f for f, _ in parts)
    want = " ".join(v for _, v in parts)
    fix = []
    if owner is not None or group is not None:
        who = (owner or "") + (f":{group}" if group is not None else "")
        fix.append(f"  chown {q(who)} {q(path)}\n")
    if mode is not None:
        fix.append(f"  chmod {q(mode)} {q(path)}\n")
    return (
        f'if [ "$(stat -c {q(fmt)} {q(path)})" != {q(want)} ]; then\n'
        + "".join(fix)
        + "  BAKE_CHANGED=1\nfi\n"
    )


def install_file(remote: str, dest: str, mode: str, owner: str, group: str | None) -> str:
    """An uploaded file into place, when its content or attributes differ."""
    grp = group or owner
    return (
        f"if [ -f {q(dest)} ] && [ ! -L {q(dest)} ] && cmp -s {q(remote)} {q(dest)}; then\n"
        + "".join("  " + line + "\n" for line in ensure_attrs(dest, mode, owner, grp).splitlines())
        + "else\n"
        f"  install -D -m {q(mode)} -o {q(owner)} -g {q(grp)} {q(remote)} {q(dest)}\n"
        "  BAKE_CHANGED=1\n"
        "fi\n"
        f"rm -f {q(remote)}\n"
    )


def directory(dest: str, mode: str, owner: str, group: str | None) -> str:
    return f"if [ ! -d {q(dest)} ]; then\n  mkdir -p {q(dest)}\n  BAKE_CHANGED=1\nfi\n" + ensure_attrs(
        dest, mode, owner, group or owner
    )


def link(dest: str, src: str) -> str:
    return (
        f'if [ "$(readlink {q(dest)} || true)" != {q(src)} ]; then\n'
        f"  if [ -d {q(dest)} ] && [ ! -L {q(dest)} ]; then\n"
        f"    echo {q(f'file: {dest} is a directory, not a link; remove it first (state: absent)')} >&2\n"
        "    exit 1\n"
        "  fi\n"
        f'  mkdir -p "$(dirname {q(dest)})"\n'
        f"  ln -sfn {q(src)} {q(dest)}\n"
        "  BAKE_CHANGED=1\n"
        "fi\n"
    )


def absent(dest: str) -> str:
    return f"if [ -e {q(dest)} ] || [ -L {q(dest)} ]; then\n  rm -rf {q(dest)}\n  BAKE_CHANGED=1\nfi\n"


def packages(names: tuple[str, ...]) -> str:
    quoted = " ".join(q(n) for n in names)
    return (
        "export DEBIAN_FRONTEND=noninteractive\n"
        "missing=''\n"
        f"for p in {quoted}; do\n"
        "  dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q 'ok installed' \\\n"
        '    || missing="$missing $p"\n'
        "done\n"
        'if [ -n "$missing" ]; then\n'
        "  apt-get update -q\n"
        "  # shellcheck disable=SC2086 # word splitting of the package list is intended\n"
        "  apt-get install -y -q --no-install-recommends $missing\n"
        "  apt-get clean\n"
        "  rm -rf /var/lib/apt/lists/*\n"
        "  BAKE_CHANGED=1\n"
        "fi\n"
    )


def _compared(state: str, body: str) -> str:
    """``body`` with BAKE_CHANGED set when the output of ``state`` differs after it."""
    return f"before=$({state})\n{body}after=$({state})\n" + '[ "$before" = "$after" ] || BAKE_CHANGED=1\n'


def user(
    name: str,
    uid: int | None,
    groups: tuple[str, ...],
    shell: str | None,
    home: str | None,
    system: bool,
) -> str:
    opts: list[str] = []
    if uid is not None:
        opts += ["--uid", str(uid)]
    if shell:
        opts += ["--shell", shell]
    if home:
        opts += ["--home-dir", home]
    if groups:
        opts += ["--groups", ",".join(groups)]
    mod = shlex.join([*opts, name])
    add = shlex.join([*(["--system"] if system else []), *opts, *(["--create-home"] if home else []), name])
    n = q(name)
    state = f"getent passwd {n} || true; id -Gn {n} 2>/dev/null || true" + (
        f"; stat -c '%U %G' {q(home)} 2>/dev/null || true" if home else ""
    )
    body = (
        f"if id -u {n} >/dev/null 2>&1; then\n"
        f"  usermod {mod}\n"
        f"elif getent group {n} >/dev/null; then\n"
        f"  useradd --gid {n} {add}\n"
        "else\n"
        f"  useradd {add}\n"
        "fi\n" + (f"mkdir -p {q(home)} && chown {n}: {q(home)}\n" if home else "")
    )
    return _compared(state, body)


def group(name: str, gid: int | None, system: bool) -> str:
    opts = [
        *(["--system"] if system else []),
        *(["--gid", str(gid)] if gid is not None else []),
        name,
    ]
    check = f"getent group {q(name)} >/dev/null"
    if gid is not None:
        body = f"if {check}; then groupmod --gid {gid} {q(name)}; else groupadd {shlex.join(opts)}; fi\n"
    else:
        body = f"{check} || groupadd {shlex.join(opts)}\n"
    return _compared(f"getent group {q(name)} || true", body)


def service(name: str, enabled: bool) -> str:
    unit = q(name if "." in name else f"{name}.service")
    verb = "enable" if enabled else "disable"
    # `systemctl enable` works offline (no running systemd needed). Images without systemd
    # (containers) get the same [Install] symlinks made by hand, so that the enablement is
    # recorded in the image and checkable.
    manual_enable = (
        "  file=''\n"
        "  for d in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do\n"
        f'    if [ -f "$d/"{unit} ]; then file="$d/"{unit}; break; fi\n'
        "  done\n"
        f'  [ -n "$file" ] || {{ echo "unit "{unit}" not found" >&2; exit 1; }}\n'
        "  wanted=$(sed -n 's/^WantedBy=//p' \"$file\")\n"
        "  for t in ${wanted:-multi-user.target}; do\n"
        '    mkdir -p "/etc/systemd/system/$t.wants"\n'
        f'    ln -sfn "$file" "/etc/systemd/system/$t.wants/"{unit}\n'
        "  done\n"
    )
    manual_disable = f"  rm -f /etc/systemd/system/*.wants/{unit}\n"
    body = (
        "if command -v systemctl >/dev/null 2>&1; then\n"
        f"  systemctl {verb} {unit}\n"
        "else\n" + (manual_enable if enabled else manual_disable) + "fi\n"
    )
    return _compared(f"ls -l /etc/systemd/system/*.wants/{unit} 2>/dev/null || true", body)


# --- downloads and archives -------------------------------------------------------------


def get_url(url: str, dest: str, sha256: str, mode: str, owner: str, group: str | None) -> str:
    """Download into a temporary file beside ``dest``, check the sha256, then move it in
    place: a file that does not match never reaches ``dest``. curl or wget when the image
    has them, else apt's own downloader (every Debian image has apt)."""
    tmp = f"{dest}.bake-download"
    expected = f"{sha256}  {dest}"
    mismatch = f"get_url: {url} does not have the sha256 {sha256}; nothing was installed"
    return (
        f"if [ -f {q(dest)} ] && echo {q(expected)} | sha256sum -c --status; then\n"
        "  :\n"
        "else\n"
        f'  mkdir -p "$(dirname {q(dest)})"\n'
        f"  rm -f {q(tmp)}\n"
        "  if command -v curl >/dev/null 2>&1; then\n"
        f"    curl -fsSL --retry 3 -o {q(tmp)} {q(url)}\n"
        "  elif command -v wget >/dev/null 2>&1; then\n"
        f"    wget -q -O {q(tmp)} {q(url)}\n"
        "  else\n"
        f"    /usr/lib/apt/apt-helper download-file {q(url)} {q(tmp)} >/dev/null\n"
        "  fi\n"
        f"  if ! echo {q(f'{sha256}  {tmp}')} | sha256sum -c --status; then\n"
        f"    rm -f {q(tmp)}\n"
        f"    echo {q(mismatch)} >&2\n"
        "    exit 1\n"
        "  fi\n"
        f"  mv -f {q(tmp)} {q(dest)}\n"
        "  BAKE_CHANGED=1\n"
        "fi\n" + ensure_attrs(dest, mode, owner, group or owner)
    )


def unarchive(
    archive: str, dest: str, creates: str | None, owner: str | None, group: str | None, remove: bool
) -> str:
    """Unpack when `tar --compare` finds a difference in content, mode or links. Times are
    no difference (a reproducible image clamps them), and ownership is set apart: files
    belong to ``owner`` or root, never to the archive's uids."""
    who = (owner or "root") + ":" + (group or owner or "root")
    body = (
        f"if [ ! -d {q(dest)} ]; then\n"
        f"  echo {q(f'unarchive: {dest} is not a folder; make it first (file: state: directory)')} >&2\n"
        "  exit 1\n"
        "fi\n"
        f"diffs=$(tar -C {q(dest)} --compare -f {q(archive)} 2>&1 \\\n"
        "  | grep -v -e ': Uid differs$' -e ': Gid differs$' -e ': Mod time differs$' || true)\n"
        'if [ -n "$diffs" ]; then\n'
        f"  tar -C {q(dest)} -x --no-same-owner -f {q(archive)}\n"
        "  BAKE_CHANGED=1\n"
        "fi\n"
        f"fixed=$(tar -t -f {q(archive)} | while IFS= read -r m; do\n"
        f'  p={q(dest)}/"$m"\n'
        f'  if [ "$(stat -c %U:%G "$p")" != {q(who)} ]; then chown -h {q(who)} "$p"; echo "$p"; fi\n'
        "done)\n"
        '[ -z "$fixed" ] || BAKE_CHANGED=1\n'
    )
    if remove:
        body += f"rm -f {q(archive)}\n"
    if creates is None:
        return body
    skip = f"rm -f {q(archive)}\n" if remove else ":\n"
    return f"if [ -e {q(creates)} ]; then\n  {skip}else\n" + _indent(body) + "fi\n"


def _indent(text: str) -> str:
    return "".join(("  " + line if line else line) + "\n" for line in text.splitlines())


def deb822_sources(
    types: tuple[str, ...],
    uris: tuple[str, ...],
    suites: tuple[str, ...],
    components: tuple[str, ...],
    architectures: tuple[str, ...],
    signed_by: str,
) -> str:
    lines = [
        f"Types: {' '.join(types)}",
        f"URIs: {' '.join(uris)}",
        f"Suites: {' '.join(suites)}",
    ]
    if components:
        lines.append(f"Components: {' '.join(components)}")
    if architectures:
        lines.append(f"Architectures: {' '.join(architectures)}")
    lines.append(f"Signed-By: {signed_by}")
    return "# generated by bake\n" + "\n".join(lines) + "\n"
