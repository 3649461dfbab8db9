"""What is inside an image: its Debian packages, read from dpkg's status file, as CycloneDX.

The SBOM is attested next to the provenance, so it must be byte-for-byte reproducible:
the same status file and image give the same BOM (components sorted, serial number
derived from the content, no clock read here: the caller passes the timestamp).

What each component carries, and where it comes from:

- ``name``, ``version``, ``purl`` (``pkg:deb/debian/NAME@VERSION?arch=…&distro=…&upstream=…``):
  dpkg's Package, Version and Architecture; ``distro`` from the image's /etc/os-release
  (``debian-12``); ``upstream`` names the source package when it differs from the binary
  one, ``SOURCE@VERSION`` when its version differs too (the convention of syft and the
  vulnerability matchers that key on source packages);
- ``supplier``: dpkg's Maintainer (``Name <email>``);
- ``licenses``: the License fields of the package's machine-readable
  ``/usr/share/doc/PKG/copyright`` (DEP-5) where the image has one; a DEP-5 short name
  with an exact SPDX equivalent is given as its SPDX id, any other as its name; a package
  without a machine-readable copyright file has no ``licenses`` (never guessed);
- ``properties`` ``bake:dpkg:source`` and ``bake:dpkg:source-version``: the source package;
- ``dependencies``: one entry per component, from Depends and Pre-Depends (an alternative
  group counts by its first member that is installed, virtual packages through Provides);
  the image (``metadata.component``) depends on every package it holds.

That covers the NTIA minimum elements: supplier, component name, version, unique
identifiers (purl), dependency relationships, author of the SBOM data (``metadata.authors``)
and timestamp.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from bake import __version__
from bake.attest.digest import canonical_json, split_digest
from bake.errors import BakeError

CYCLONEDX = "https://cyclonedx.org/bom"
SPEC_VERSION = "1.5"
AUTHOR = "bake"

# Fixed namespace so that serialNumber = uuid5(content) is stable across runs and hosts.
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://bake.invalid/sbom")

# purl: letters, digits and ".-_~" stay as they are, and so does ':' (ECMA-427 says a
# colon is never percent-encoded); everything else, '+' and '@' included, is %XX-encoded.
_PURL_SAFE = ".-_~:"

DEP5_FORMAT = "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0"
COPYRIGHT_LIMIT = 1 << 20  # a larger "copyright" file is not read

# DEP-5 short names (compared case-insensitively) with exactly one SPDX identifier. Others
# ("Artistic", "public-domain", "GPL" without a version, expressions with "or"/"and") are
# kept as license names: an identifier that is not certain would be a guess.
DEP5_TO_SPDX: Mapping[str, str] = {
    "apache-2.0": "Apache-2.0",
    "apache-2.0+": "Apache-2.0",
    "agpl-3": "AGPL-3.0-only",
    "agpl-3+": "AGPL-3.0-or-later",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause",
    "cc0-1.0": "CC0-1.0",
    "expat": "MIT",
    "mit": "MIT",
    "gfdl-1.2": "GFDL-1.2-only",
    "gfdl-1.2+": "GFDL-1.2-or-later",
    "gfdl-1.3": "GFDL-1.3-only",
    "gfdl-1.3+": "GFDL-1.3-or-later",
    "gpl-1": "GPL-1.0-only",
    "gpl-1+": "GPL-1.0-or-later",
    "gpl-2": "GPL-2.0-only",
    "gpl-2+": "GPL-2.0-or-later",
    "gpl-3": "GPL-3.0-only",
    "gpl-3+": "GPL-3.0-or-later",
    "isc": "ISC",
    "lgpl-2": "LGPL-2.0-only",
    "lgpl-2+": "LGPL-2.0-or-later",
    "lgpl-2.1": "LGPL-2.1-only",
    "lgpl-2.1+": "LGPL-2.1-or-later",
    "lgpl-3": "LGPL-3.0-only",
    "lgpl-3+": "LGPL-3.0-or-later",
    "mpl-1.1": "MPL-1.1",
    "mpl-2.0": "MPL-2.0",
    "zlib": "Zlib",
    "0bsd": "0BSD",
    "bsl-1.0": "BSL-1.0",
    "unlicense": "Unlicense",
}

_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*")
_MAINTAINER = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s]+@[^<>\s]+)>\s*$")
_RELATION = re.compile(
    r"^\s*(?P<name>[a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(.*\))?\s*(?:\[.*\])?\s*(?:<.*>)?\s*$"
)


@dataclass(frozen=True, order=True)
class Package:
    """One installed Debian binary package."""

    name: str
    version: str
    arch: str
    source: str
    source_version: str = ""  # empty: the binary's own version
    maintainer: str = field(default="", compare=False)
    # Depends and Pre-Depends: groups of alternatives, package names only
    depends: tuple[tuple[str, ...], ...] = field(default=(), compare=False)
    provides: tuple[str, ...] = field(default=(), compare=False)

    @property
    def source_ver(self) -> str:
        return self.source_version or self.version

    @property
    def upstream(self) -> str | None:
        """The purl ``upstream`` qualifier: the source package where it differs."""
        if self.source_ver != self.version:
            return f"{self.source}@{self.source_ver}"
        return self.source if self.source != self.name else None

    @property
    def purl(self) -> str:
        return self.purl_in(None)

    def purl_in(self, distro: str | None) -> str:
        """The package's purl; *distro* (``debian-12``) adds the ``distro`` qualifier."""
        qualifiers = [("arch", self.arch), ("distro", distro), ("upstream", self.upstream)]
        query = "&".join(f"{k}={_purl_quote(v)}" for k, v in qualifiers if v)
        return f"pkg:deb/debian/{_purl_quote(self.name)}@{_purl_quote(self.version)}?{query}"


def parse_dpkg_status(text: str, *, origin: str = "dpkg status") -> list[Package]:
    """The packages that are installed according to a dpkg status file's *text*.

    A package counts when its Status is ``<want> ok installed``: usually ``install``, but
    a package on hold or marked for removal is still on disk, so it is listed too.
    Config-files-only, half-installed and broken packages are not. *origin* names the file
    in error messages.
    """
    packages = []
    for lineno, fields in _stanzas(text, origin):
        status = fields.get("status", "").split()
        if len(status) != 3 or status[1:] != ["ok", "installed"]:
            continue
        name = fields.get("package")
        if not name:
            raise BakeError(f"{origin}:{lineno}: installed package stanza has no Package field")
        missing = [f for f in ("version", "architecture") if not fields.get(f)]
        if missing:
            raise BakeError(
                f"{origin}:{lineno}: package {name!r} has no {' or '.join(f.title() for f in missing)} field"
            )
        # "Source: name (version)" when the source version differs; absent when the
        # source package is named like the binary one.
        source_field = fields.get("source", "")
        source = source_field.split(" ", 1)[0] or name
        source_version = ""
        if "(" in source_field and source_field.rstrip().endswith(")"):
            source_version = source_field.split("(", 1)[1].rstrip().removesuffix(")").strip()
        depends = _relations(fields.get("pre-depends", "")) + _relations(fields.get("depends", ""))
        provides = tuple(g[0] for g in _relations(fields.get("provides", "")) if g)
        packages.append(
            Package(
                name,
                fields["version"],
                fields["architecture"],
                source,
                source_version if source_version != fields["version"] else "",
                maintainer=fields.get("maintainer", ""),
                depends=depends,
                provides=provides,
            )
        )
    return sorted(packages)


def _relations(value: str) -> tuple[tuple[str, ...], ...]:
    """``a (>= 1), b | c:any`` -> (("a",), ("b", "c")): names only, in order."""
    groups = []
    for group in value.split(","):
        names = []
        for alternative in group.split("|"):
            m = _RELATION.match(alternative.strip().lower())
            if m:
                names.append(m.group("name"))
        if names:
            groups.append(tuple(names))
    return tuple(groups)


def _stanzas(text: str, origin: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (first line number, fields by lower-cased name) for each deb822 paragraph.

    Continuation lines are joined to their field with newlines (as deb822 keeps them)."""
    fields: dict[str, str] = {}
    start = 0
    last: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            if fields:
                yield start, fields
            fields, last = {}, None
            continue
        if line[0] in " \t":
            if last is None:
                raise BakeError(f"{origin}:{lineno}: continuation line outside a field")
            fields[last] += "\n" + line.strip()
            continue
        if line.startswith("#"):
            continue  # deb822 comments (copyright files may have them)
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name:
            raise BakeError(
                f"{origin}:{lineno}: expected 'Field: value', got {line[:60]!r}",
                hint="is this a dpkg status file (/var/lib/dpkg/status)?",
            )
        if not fields:
            start = lineno
        last = name.lower()
        fields[last] = value.strip()
    if fields:
        yield start, fields


# --- licences: machine-readable copyright files (DEP-5) ---------------------------------


def copyright_licenses(text: str) -> tuple[str, ...] | None:
    """The distinct License short names of a DEP-5 copyright file, sorted; None when the
    file is not machine-readable (no DEP-5 Format header) or cannot be parsed."""
    try:
        paragraphs = [fields for _, fields in _stanzas(text, "copyright")]
    except BakeError:
        return None
    if not paragraphs or not is_dep5(paragraphs[0].get("format", "")):
        return None
    names = set()
    for fields in paragraphs:
        first = fields.get("license", "").split("\n", 1)[0].strip()
        # in a Files paragraph (or the header) License names what applies; a stand-alone
        # License paragraph (no Files) only gives the text of a name used elsewhere
        if first and ("files" in fields or fields is paragraphs[0]):
            names.add(first)
    return tuple(sorted(names)) or None


def is_dep5(format_field: str) -> bool:
    value = format_field.strip().rstrip("/").lower()
    return value.removeprefix("http://").removeprefix("https://") == DEP5_FORMAT.removeprefix("https://")


def license_entry(short_name: str) -> dict[str, object]:
    spdx = DEP5_TO_SPDX.get(short_name.strip().lower())
    return {"license": {"id": spdx} if spdx else {"name": short_name}}


def licenses_of(names: Iterable[str]) -> list[dict[str, object]]:
    """CycloneDX ``licenses`` of DEP-5 short names: one entry each, no duplicates."""
    out: dict[str, dict[str, object]] = {}
    for name in names:
        entry = license_entry(name)
        out[canonical_json(entry).decode()] = entry
    return [out[k] for k in sorted(out)]


# --- what the image holds, read by one shell script in it ---------------------------------

# Prints `os-release B64` and, per machine-readable copyright file, `copyright PKG B64`
# (one line each; base64 so that no content can break the framing). Runs in a container
# of the image or over SSH in a VM of it; needs sh, head and base64 (Debian's essential set).
EVIDENCE_SCRIPT = r"""
for f in /etc/os-release /usr/lib/os-release; do
  if [ -f "$f" ]; then printf 'os-release '; head -c 65536 "$f" | base64 -w0; echo; break; fi
done
for f in /usr/share/doc/*/copyright; do
  [ -f "$f" ] || continue
  IFS= read -r first < "$f" || continue
  case "$first" in Format:*) ;; *) continue ;; esac
  d=${f%/copyright}
  printf 'copyright %s ' "${d##*/}"; head -c 1048576 "$f" | base64 -w0; echo
done
""".strip()


@dataclass(frozen=True)
class OsEvidence:
    os_release: str | None
    copyrights: Mapping[str, str]


def parse_evidence(output: str) -> OsEvidence:
    """What :data:`EVIDENCE_SCRIPT` printed; lines it did not write are skipped."""
    os_release: str | None = None
    copyrights: dict[str, str] = {}
    for line in output.splitlines():
        parts = line.strip().split(" ")
        try:
            if len(parts) == 2 and parts[0] == "os-release":
                os_release = base64.b64decode(parts[1], validate=True).decode("utf-8", "replace")
            elif len(parts) == 3 and parts[0] == "copyright" and _PACKAGE.fullmatch(parts[1]):
                copyrights[parts[1]] = base64.b64decode(parts[2], validate=True).decode("utf-8", "replace")
        except binascii.Error:
            continue
    return OsEvidence(os_release, dict(sorted(copyrights.items())))


# --- the operating system ---------------------------------------------------------------


def os_release_distro(text: str | None) -> str | None:
    """``debian-12`` from an /etc/os-release (ID and VERSION_ID, else VERSION_CODENAME)."""
    if not text:
        return None
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip("'\"")
    os_id = values.get("ID", "").lower()
    version = values.get("VERSION_ID") or values.get("VERSION_CODENAME")
    if not os_id or not version or not re.fullmatch(r"[a-z0-9._-]+", f"{os_id}-{version}".lower()):
        return None
    return f"{os_id}-{version}".lower()


# --- the image itself ---------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """What the BOM describes: ``metadata.component``."""

    name: str
    version: str
    digest: str  # sha256:<hex> of the artifact
    purl: str
    type: str = "container"  # CycloneDX component type: container | operating-system


def oci_purl(name: str, digest: str, repository_url: str | None = None, tag: str | None = None) -> str:
    """``pkg:oci/NAME@sha256%3A…?repository_url=…&tag=…`` (purl's oci type: the name is
    the repository's last segment, the version the manifest digest)."""
    split_digest(digest)
    last = name.rsplit("/", 1)[-1].lower()
    qualifiers = [("repository_url", repository_url), ("tag", tag)]
    query = "&".join(f"{k}={_purl_quote(v, safe='.-_~:/')}" for k, v in qualifiers if v)
    return f"pkg:oci/{_purl_quote(last)}@{_purl_quote(digest)}" + (f"?{query}" if query else "")


def generic_purl(name: str, version: str, digest: str) -> str:
    """``pkg:generic/NAME@VERSION?checksum=sha256:…`` for an artifact that is a file."""
    algo, hexd = split_digest(digest)
    return f"pkg:generic/{_purl_quote(name)}@{_purl_quote(version)}?checksum={algo}:{hexd}"


# --- the BOM ------------------------------------------------------------------------------


def cyclonedx(
    packages: Iterable[Package],
    *,
    image_name: str,
    image_digest: str,
    timestamp: str,
    image: Image | None = None,
    copyrights: Mapping[str, str] | None = None,
    distro: str | None = None,
) -> dict[str, object]:
    """A CycloneDX 1.5 JSON BOM of *packages*, describing the image *image_name*.

    *timestamp* is RFC 3339 (e.g. ``2024-05-01T12:00:00Z``), given so output is
    reproducible. *image* describes the image as ``metadata.component`` (default: a
    container named *image_name* with an ``oci`` purl of its digest); *copyrights* maps a
    package name to its /usr/share/doc/NAME/copyright; *distro* (``debian-12``) goes into
    every purl.
    """
    _, image_hex = split_digest(image_digest)
    _check_timestamp(timestamp)
    unique = sorted(set(packages))
    refs = [p.purl_in(distro) for p in unique]
    ids = [f"{p.name}:{p.arch} {p.version}" for p in unique]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise BakeError(f"packages listed twice with different sources: {', '.join(dupes)}")
    me = image or Image(image_name, "", image_digest, oci_purl(image_name, image_digest))
    top: dict[str, object] = {
        "type": me.type,
        "bom-ref": me.purl,
        "name": me.name,
        **({"version": me.version} if me.version else {}),
        "hashes": [{"alg": "SHA-256", "content": image_hex}],
        "purl": me.purl,
    }
    licenses = {name: copyright_licenses(text) for name, text in (copyrights or {}).items()}
    resolver = _Resolver(unique, distro)
    bom: dict[str, object] = {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{"type": "application", "name": "bake", "version": __version__}]},
            "authors": [{"name": AUTHOR}],
            "component": top,
        },
        "components": [_component(p, distro, licenses.get(p.name)) for p in unique],
        "dependencies": [
            {"ref": me.purl, "dependsOn": sorted(refs)},
            *({"ref": ref, "dependsOn": resolver.depends_on(p)} for p, ref in zip(unique, refs, strict=True)),
        ],
    }
    serial = uuid.uuid5(_SERIAL_NAMESPACE, canonical_json(bom).decode("utf-8"))
    return {"serialNumber": serial.urn, **bom}


def _component(p: Package, distro: str | None, licenses: Sequence[str] | None) -> dict[str, object]:
    purl = p.purl_in(distro)
    out: dict[str, object] = {
        "type": "library",
        "bom-ref": purl,
        "name": p.name,
        "version": p.version,
        "purl": purl,
        "properties": [
            {"name": "bake:dpkg:source", "value": p.source},
            {"name": "bake:dpkg:source-version", "value": p.source_ver},
        ],
    }
    supplier = supplier_of(p.maintainer)
    if supplier is not None:
        out["supplier"] = supplier
    if licenses:
        out["licenses"] = licenses_of(licenses)
    return out


def supplier_of(maintainer: str) -> dict[str, object] | None:
    """dpkg's ``Maintainer: Name <email>`` as a CycloneDX organizational entity."""
    text = " ".join(maintainer.split())
    if not text:
        return None
    m = _MAINTAINER.match(text)
    if m is None:
        return {"name": text}
    name = m.group("name").strip().strip('"') or m.group("email")
    return {"name": name, "contact": [{"name": name, "email": m.group("email")}]}


class _Resolver:
    """Which installed package satisfies a dependency of another."""

    def __init__(self, packages: Sequence[Package], distro: str | None) -> None:
        self.distro = distro
        self.by_name: dict[str, list[Package]] = {}
        for p in packages:
            self.by_name.setdefault(p.name, []).append(p)
            for virtual in p.provides:
                self.by_name.setdefault(virtual, []).append(p)
        archs = [p.arch for p in packages if p.arch != "all"]
        dpkg = [p.arch for p in packages if p.name == "dpkg"]
        self.native = dpkg[0] if dpkg else (max(sorted(set(archs)), key=archs.count) if archs else "all")

    def depends_on(self, p: Package) -> list[str]:
        found: set[str] = set()
        for group in p.depends:
            for name in group:
                hits = self._pick(self.by_name.get(name, []), p.arch)
                if hits:
                    found.update(h.purl_in(self.distro) for h in hits if h != p)
                    break
        return sorted(found)

    def _pick(self, candidates: Sequence[Package], arch: str) -> list[Package]:
        if not candidates:
            return []
        want = self.native if arch == "all" else arch
        same = [c for c in candidates if c.arch in (want, "all")]
        return same or list(candidates[:1])


def _purl_quote(s: str, safe: str = _PURL_SAFE) -> str:
    return quote(s, safe=safe)


def _check_timestamp(timestamp: str) -> None:
    try:
        parsed = datetime.fromisoformat(timestamp)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in timestamp.upper():
        raise BakeError(
            f"SBOM timestamp {timestamp!r} is not an RFC 3339 date-time with a time zone",
            hint="e.g. 2024-05-01T12:00:00Z",
        )
