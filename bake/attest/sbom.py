"""What is inside an image: its Debian packages, read from dpkg's status file, as CycloneDX.

The SBOM is attested next to the provenance, so it must be byte-for-byte reproducible:
the same status file and image give the same BOM (components sorted, serial number
derived from the content, no clock read here: the caller passes the timestamp).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from bake import __version__
from bake.attest.digest import canonical_json, split_digest
from bake.errors import BakeError

CYCLONEDX = "https://cyclonedx.org/bom"
SPEC_VERSION = "1.5"

# Fixed namespace so that serialNumber = uuid5(content) is stable across runs and hosts.
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://bake.invalid/sbom")

# purl: letters, digits and ".-_~" stay as they are, and so does ':' (ECMA-427 says a
# colon is never percent-encoded); everything else, '+' included, is %XX-encoded.
_PURL_SAFE = ".-_~:"


@dataclass(frozen=True, order=True)
class Package:
    """One installed Debian binary package."""

    name: str
    version: str
    arch: str
    source: str

    @property
    def purl(self) -> str:
        return (
            f"pkg:deb/debian/{_purl_quote(self.name)}@{_purl_quote(self.version)}"
            f"?arch={_purl_quote(self.arch)}"
        )


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
        source = fields.get("source", "").split(" ", 1)[0] or name
        packages.append(Package(name, fields["version"], fields["architecture"], source))
    return sorted(packages)


def _stanzas(text: str, origin: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (first line number, fields by lower-cased name) for each deb822 paragraph."""
    fields: dict[str, str] = {}
    start = 0
    last: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if fields:
                yield start, fields
            fields, last = {}, None
            continue
        if line[0] in " \t":
            if last is None:
                raise BakeError(f"{origin}:{lineno}: continuation line outside a field")
            continue  # multi-line values (Description, Conffiles) are not needed here
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


# `grep -R -H '^License:' --include=copyright /usr/share/doc` prints one of these per line
_LICENSE_LINE = re.compile(r"/usr/share/doc/([a-z0-9][a-z0-9.+-]*)/copyright:License:[ \t]*(\S.*?)\s*")
MAX_LICENSES = 20  # per package: a copyright file lists one per stanza, with repeats
MAX_LICENSE_CHARS = 120


def parse_copyright_licenses(text: str) -> dict[str, tuple[str, ...]]:
    """Licence names by package, from the ``License:`` lines of Debian's machine-readable
    copyright files (DEP-5) as ``grep -H`` prints them. A package whose copyright file is
    free text has none: the SBOM then states no licence for it rather than a guess."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = _LICENSE_LINE.fullmatch(line)
        if m is not None:
            found.setdefault(m.group(1), set()).add(m.group(2)[:MAX_LICENSE_CHARS])
    return {pkg: tuple(sorted(names)[:MAX_LICENSES]) for pkg, names in sorted(found.items())}


def cyclonedx(
    packages: Iterable[Package],
    *,
    image_name: str,
    image_digest: str,
    timestamp: str,
    licenses: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, object]:
    """A CycloneDX 1.5 JSON BOM of *packages*, describing the image *image_name*.

    *timestamp* is RFC 3339 (e.g. ``2024-05-01T12:00:00Z``), given so output is
    reproducible. *licenses* (package name → licence names, see
    :func:`parse_copyright_licenses`) become each component's ``licenses``.
    """
    _, image_hex = split_digest(image_digest)
    _check_timestamp(timestamp)
    unique = sorted(set(packages))
    refs = [p.purl for p in unique]
    if len(set(refs)) != len(refs):
        dupes = sorted({r for r in refs if refs.count(r) > 1})
        raise BakeError(f"packages listed twice with different sources: {', '.join(dupes)}")

    bom: dict[str, object] = {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{"type": "application", "name": "bake", "version": __version__}]},
            "component": {
                "type": "operating-system",
                "bom-ref": image_digest,
                "name": image_name,
                "hashes": [{"alg": "SHA-256", "content": image_hex}],
            },
        },
        "components": [_component(p, (licenses or {}).get(p.name, ())) for p in unique],
    }
    serial = uuid.uuid5(_SERIAL_NAMESPACE, canonical_json(bom).decode("utf-8"))
    return {"serialNumber": serial.urn, **bom}


def _component(p: Package, licenses: Sequence[str] = ()) -> dict[str, object]:
    purl = p.purl
    out: dict[str, object] = {
        "type": "library",
        "bom-ref": purl,
        "name": p.name,
        "version": p.version,
        "purl": purl,
        "properties": [{"name": "bake:dpkg:source", "value": p.source}],
    }
    if licenses:  # Debian's short names are not all SPDX ids: CycloneDX's `name` form
        out["licenses"] = [{"license": {"name": name}} for name in licenses]
    return out


def _purl_quote(s: str) -> str:
    return quote(s, safe=_PURL_SAFE)


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
