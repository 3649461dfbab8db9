"""Tests for bake.sbom: dpkg status parsing and the CycloneDX BOM built from it."""

from __future__ import annotations

import json
import random
import re

import pytest

from bake.attest.digest import canonical_json, sha256_bytes
from bake.attest.sbom import CYCLONEDX, Package, cyclonedx, parse_copyright_licenses, parse_dpkg_status
from bake.errors import BakeError
from tests.conftest import FIXTURES

STATUS = FIXTURES / "dpkg" / "status"
IMAGE = sha256_bytes(b"image")
WHEN = "2024-05-01T12:00:00Z"


@pytest.fixture
def packages() -> list[Package]:
    return parse_dpkg_status(STATUS.read_text(encoding="utf-8"), origin=str(STATUS))


def test_parse_keeps_installed_packages_only(packages: list[Package]) -> None:
    assert packages == [
        Package("base-files", "12.4+deb12u5", "amd64", "base-files"),
        Package("libc6", "2.36-9+deb12u4", "amd64", "glibc"),
        Package("libc6", "2.36-9+deb12u4", "i386", "glibc"),
        Package("libstdc++6", "12.2.0-14", "amd64", "gcc-12"),
        Package("linux-image-amd64", "6.1.76-1", "amd64", "linux-signed-amd64"),
        Package("tzdata", "2024a-0+deb12u1", "all", "tzdata"),
        Package("zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib"),
    ]


def test_parse_skips_config_files_and_half_installed(packages: list[Package]) -> None:
    names = {p.name for p in packages}
    assert "nano" not in names  # deinstall ok config-files
    assert "vim-tiny" not in names  # install ok half-installed


def test_parse_empty() -> None:
    assert parse_dpkg_status("") == []
    assert parse_dpkg_status("\n\n") == []


def test_parse_field_names_are_case_insensitive_and_crlf_ok() -> None:
    text = "package: a\r\nSTATUS: install ok installed\r\nversion: 1\r\narchitecture: amd64\r\n"
    assert parse_dpkg_status(text) == [Package("a", "1", "amd64", "a")]


def test_parse_missing_version_names_line() -> None:
    text = "Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n"
    text += "Package: b\nStatus: install ok installed\nArchitecture: all\n"
    with pytest.raises(BakeError, match=r"^status:6: package 'b' has no Version field$"):
        parse_dpkg_status(text, origin="status")


def test_parse_rejects_garbage() -> None:
    with pytest.raises(BakeError, match=r"^x:2: expected 'Field: value'") as e:
        parse_dpkg_status("Package: a\nthis is not deb822\n", origin="x")
    assert e.value.hint is not None
    assert "dpkg status" in e.value.hint


def test_parse_rejects_leading_continuation() -> None:
    with pytest.raises(BakeError, match=r"^x:1: continuation line"):
        parse_dpkg_status(" orphan\n", origin="x")


@pytest.mark.parametrize(
    ("pkg", "purl"),
    [
        (
            Package("zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib"),
            "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64",
        ),
        (
            Package("libc6", "2.36-9+deb12u4", "i386", "glibc"),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386",
        ),
        (
            Package("libstdc++6", "12.2.0-14", "amd64", "gcc-12"),
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64",
        ),
        (
            Package("x", "1.0~rc1 beta", "all", "x"),
            "pkg:deb/debian/x@1.0~rc1%20beta?arch=all",
        ),
    ],
)
def test_purl_encoding(pkg: Package, purl: str) -> None:
    assert pkg.purl == purl


def test_cyclonedx_document(packages: list[Package]) -> None:
    bom = cyclonedx(packages, image_name="web", image_digest=IMAGE, timestamp=WHEN)
    assert bom["bomFormat"] == "CycloneDX"
    assert bom["specVersion"] == "1.5"
    assert bom["version"] == 1
    assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", str(bom["serialNumber"]))
    metadata = bom["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["timestamp"] == WHEN
    assert metadata["component"] == {
        "type": "operating-system",
        "bom-ref": IMAGE,
        "name": "web",
        "hashes": [{"alg": "SHA-256", "content": IMAGE.removeprefix("sha256:")}],
    }
    components = bom["components"]
    assert isinstance(components, list)
    assert [c["name"] for c in components] == sorted(c["name"] for c in components)
    libc_i386 = next(c for c in components if c["purl"].endswith("arch=i386"))
    assert libc_i386 == {
        "type": "library",
        "bom-ref": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386",
        "name": "libc6",
        "version": "2.36-9+deb12u4",
        "purl": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386",
        "properties": [{"name": "bake:dpkg:source", "value": "glibc"}],
    }
    assert len({c["bom-ref"] for c in components}) == len(components) == 7
    json.dumps(bom, allow_nan=False)  # plain JSON all the way down
    assert CYCLONEDX == "https://cyclonedx.org/bom"


def test_cyclonedx_is_deterministic(packages: list[Package]) -> None:
    shuffled = packages[:] + packages[:2]
    random.Random(3).shuffle(shuffled)
    a = cyclonedx(packages, image_name="web", image_digest=IMAGE, timestamp=WHEN)
    b = cyclonedx(shuffled, image_name="web", image_digest=IMAGE, timestamp=WHEN)
    assert canonical_json(a) == canonical_json(b)
    c = cyclonedx(packages[1:], image_name="web", image_digest=IMAGE, timestamp=WHEN)
    assert c["serialNumber"] != a["serialNumber"]


def test_cyclonedx_validates_inputs(packages: list[Package]) -> None:
    with pytest.raises(BakeError, match="not a digest"):
        cyclonedx(packages, image_name="web", image_digest="abc", timestamp=WHEN)
    for bad in ("yesterday", "2024-05-01", "2024-05-01T12:00:00"):
        with pytest.raises(BakeError, match="RFC 3339"):
            cyclonedx(packages, image_name="web", image_digest=IMAGE, timestamp=bad)


def test_cyclonedx_rejects_conflicting_duplicates() -> None:
    pkgs = [Package("a", "1", "all", "s1"), Package("a", "1", "all", "s2")]
    with pytest.raises(BakeError, match="listed twice"):
        cyclonedx(pkgs, image_name="web", image_digest=IMAGE, timestamp=WHEN)


# --- licences from Debian's machine-readable copyright files ------------------------------

GREP = """/usr/share/doc/curl/copyright:License: curl
/usr/share/doc/curl/copyright:License: ISC
/usr/share/doc/curl/copyright:License: curl
/usr/share/doc/libc6/copyright:License:   LGPL-2.1+\t
/usr/share/doc/zlib1g/copyright:License:
/usr/share/doc/../../etc/copyright:License: sneaky
not a grep line
"""


def test_parse_copyright_licenses() -> None:
    assert parse_copyright_licenses(GREP) == {"curl": ("ISC", "curl"), "libc6": ("LGPL-2.1+",)}


def test_licences_become_component_licenses(packages: list[Package]) -> None:
    bom = cyclonedx(
        packages,
        image_name="web",
        image_digest=IMAGE,
        timestamp=WHEN,
        licenses={"tzdata": ("public-domain",)},
    )
    comps = {c["name"]: c for c in bom["components"]}  # type: ignore[attr-defined]
    assert comps["tzdata"]["licenses"] == [{"license": {"name": "public-domain"}}]
    assert "licenses" not in comps["zlib1g"]  # none stated: none claimed
    plain = cyclonedx(packages, image_name="web", image_digest=IMAGE, timestamp=WHEN)
    assert all("licenses" not in c for c in plain["components"])  # type: ignore[attr-defined]
