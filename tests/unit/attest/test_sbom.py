"""Tests for bake.sbom: dpkg status parsing and the CycloneDX BOM built from it."""

from __future__ import annotations

import base64
import json
import random
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bake.attest.digest import canonical_json, sha256_bytes
from bake.attest.sbom import (
    CYCLONEDX,
    EVIDENCE_SCRIPT,
    Image,
    OsEvidence,
    Package,
    copyright_licenses,
    cyclonedx,
    generic_purl,
    oci_purl,
    os_release_distro,
    parse_dpkg_status,
    parse_evidence,
)
from bake.errors import BakeError
from tests.conftest import FIXTURES

STATUS = FIXTURES / "dpkg" / "status"
FULL = FIXTURES / "dpkg" / "status-full"
DOC = FIXTURES / "dpkg" / "doc"
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
        Package("linux-image-amd64", "6.1.76-1", "amd64", "linux-signed-amd64", "6.1.76+1"),
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
            "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&upstream=zlib",
        ),
        (
            Package("libc6", "2.36-9+deb12u4", "i386", "glibc"),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386&upstream=glibc",
        ),
        (
            Package("libstdc++6", "12.2.0-14", "amd64", "gcc-12"),
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&upstream=gcc-12",
        ),
        (
            Package("x", "1.0~rc1 beta", "all", "x"),
            "pkg:deb/debian/x@1.0~rc1%20beta?arch=all",
        ),
        (
            # the source version differs: vulnerability matchers key on util-linux 2.38.1-5+deb12u3
            Package("bsdutils", "1:2.38.1-5+deb12u3", "amd64", "util-linux", "2.38.1-5+deb12u3"),
            "pkg:deb/debian/bsdutils@1:2.38.1-5%2Bdeb12u3?arch=amd64&upstream=util-linux%402.38.1-5%2Bdeb12u3",
        ),
    ],
)
def test_purl_encoding(pkg: Package, purl: str) -> None:
    assert pkg.purl == purl


def test_purl_distro_qualifier_sorts_between_arch_and_upstream() -> None:
    p = Package("libc6", "2.36-9", "amd64", "glibc")
    assert p.purl_in("debian-12") == "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12&upstream=glibc"


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
        "type": "container",
        "bom-ref": f"pkg:oci/web@{IMAGE}",
        "name": "web",
        "hashes": [{"alg": "SHA-256", "content": IMAGE.removeprefix("sha256:")}],
        "purl": f"pkg:oci/web@{IMAGE}",
    }
    assert metadata["authors"] == [{"name": "bake"}]
    components = bom["components"]
    assert isinstance(components, list)
    assert [c["name"] for c in components] == sorted(c["name"] for c in components)
    libc_i386 = next(c for c in components if "arch=i386" in c["purl"])
    assert libc_i386 == {
        "type": "library",
        "bom-ref": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386&upstream=glibc",
        "name": "libc6",
        "version": "2.36-9+deb12u4",
        "purl": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386&upstream=glibc",
        "properties": [
            {"name": "bake:dpkg:source", "value": "glibc"},
            {"name": "bake:dpkg:source-version", "value": "2.36-9+deb12u4"},
        ],
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


# --- the full picture: supplier, licences, dependencies, distro ---------------------------


def full_bom() -> dict[str, object]:
    packages = parse_dpkg_status(FULL.read_text(encoding="utf-8"), origin=str(FULL))
    copyrights = {p.name.split(".")[0]: p.read_text(encoding="utf-8") for p in (DOC).iterdir()}
    image = Image("web", "1.4.0", IMAGE, oci_purl("web", IMAGE, "127.0.0.1:5000/bake/web", "1.4.0-abc"))
    return cyclonedx(
        packages,
        image_name="web",
        image_digest=IMAGE,
        timestamp=WHEN,
        image=image,
        copyrights=copyrights,
        distro=os_release_distro((FIXTURES / "dpkg" / "os-release").read_text()),
    )


def _by_name(bom: dict[str, object]) -> dict[str, dict[str, Any]]:
    components = bom["components"]
    assert isinstance(components, list)
    return {str(c["name"]): c for c in components}


def test_parse_reads_maintainer_relations_and_source_version() -> None:
    packages = {p.name: p for p in parse_dpkg_status(FULL.read_text(encoding="utf-8"))}
    bsd = packages["bsdutils"]
    assert (bsd.source, bsd.source_version, bsd.source_ver) == (
        "util-linux",
        "2.38.1-5+deb12u3",
        "2.38.1-5+deb12u3",
    )
    assert bsd.maintainer == "util-linux packagers <util-linux@packages.debian.org>"
    assert bsd.depends == (("libc6",), ("libsystemd0",))  # Pre-Depends count
    assert packages["libsystemd0"].depends == (("libc6",), ("libgcc1", "libgcc-s1"))
    assert packages["libgcc-s1"].provides == ("libgcc1",)
    assert packages["libgcc-s1"].source_version == ""  # "gcc-12 (12.2.0-14)": the binary's own version
    assert packages["nginx-light"].depends == (("libc6",), ("nginx-common", "nginx-full"))


def test_supplier_licences_and_source_of_each_component() -> None:
    comps = _by_name(full_bom())
    assert comps["bsdutils"]["supplier"] == {
        "name": "util-linux packagers",
        "contact": [{"name": "util-linux packagers", "email": "util-linux@packages.debian.org"}],
    }
    assert comps["bsdutils"]["purl"] == (
        "pkg:deb/debian/bsdutils@1:2.38.1-5%2Bdeb12u3?arch=amd64&distro=debian-12"
        "&upstream=util-linux%402.38.1-5%2Bdeb12u3"
    )
    assert {"name": "bake:dpkg:source-version", "value": "2.38.1-5+deb12u3"} in comps["bsdutils"][
        "properties"
    ]
    # DEP-5: SPDX ids where the short name has exactly one, names otherwise; the stand-alone
    # licence paragraph is no licence of the package
    assert comps["nginx-light"]["licenses"] == [
        {"license": {"id": "BSD-2-Clause"}},
        {"license": {"id": "GPL-2.0-or-later"}},
        {"license": {"name": "Expat or public-domain"}},
    ]
    assert "licenses" not in comps["libc6"]  # its copyright file is not machine-readable
    assert "licenses" not in comps["curl"]  # no copyright file at all: nothing is guessed


def test_dependency_graph_from_depends_pre_depends_and_provides() -> None:
    bom = full_bom()
    comps = _by_name(bom)
    deps = bom["dependencies"]
    assert isinstance(deps, list)
    graph = {d["ref"]: d["dependsOn"] for d in deps}

    def graph_names(name: str) -> list[str]:
        purls = graph[comps[name]["bom-ref"]]
        return [n for n, c in comps.items() if c["bom-ref"] in purls]

    assert graph_names("bsdutils") == ["libc6", "libsystemd0"]
    assert sorted(graph_names("libsystemd0")) == ["libc6", "libgcc-s1"]  # libgcc1 is provided by libgcc-s1
    assert sorted(graph_names("nginx-light")) == ["libc6", "nginx-common"]  # first installed alternative
    assert sorted(graph_names("nginx-common")) == ["libc6"]  # lsb-base is not installed: no edge
    assert graph_names("curl") == ["nginx-light"]  # the virtual package httpd
    assert graph_names("gcc-12-base") == []
    # every component has its entry, and the image depends on every package
    assert set(graph) == {c["bom-ref"] for c in comps.values()} | {
        f"pkg:oci/web@{IMAGE}?repository_url=127.0.0.1:5000/bake/web&tag=1.4.0-abc"
    }
    top = bom["metadata"]["component"]  # type: ignore[index]
    assert sorted(graph[top["bom-ref"]]) == sorted(c["bom-ref"] for c in comps.values())
    assert top["version"] == "1.4.0" and top["type"] == "container"


def test_copyright_licenses_needs_the_dep5_format_header() -> None:
    header = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    dep5 = header + "\nFiles: *\nLicense: MIT\n"
    assert copyright_licenses(dep5) == ("MIT",)
    assert copyright_licenses(dep5.replace("https:", "http:").replace("1.0/", "1.0")) == ("MIT",)
    assert (
        copyright_licenses("Format-Specification: http://svn.debian.org/dep5\n\nFiles: *\nLicense: MIT\n")
        is None
    )
    assert copyright_licenses("just text\n") is None
    assert copyright_licenses("") is None


@pytest.mark.parametrize(
    ("text", "distro"),
    [
        ('ID=debian\nVERSION_ID="12"\n', "debian-12"),
        ("ID=debian\nVERSION_CODENAME=trixie\n", "debian-trixie"),  # testing has no VERSION_ID
        ("ID=ubuntu\nVERSION_ID='22.04'\n", "ubuntu-22.04"),
        ("NAME=x\n", None),
        (None, None),
    ],
)
def test_os_release_distro(text: str | None, distro: str | None) -> None:
    assert os_release_distro(text) == distro


def test_evidence_script_output_is_parsed_and_framing_is_safe() -> None:
    copyright_text = (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nX: copyright zz\n"
    )
    out = "\n".join(
        [
            "os-release " + base64.b64encode(b"ID=debian\nVERSION_ID=12\n").decode(),
            "copyright nginx-light " + base64.b64encode(copyright_text.encode()).decode(),
            "copyright BAD/NAME " + base64.b64encode(b"x").decode(),  # not a package name
            "copyright broken !!!",  # not base64
            "noise from a login banner",
        ]
    )
    got = parse_evidence(out)
    assert got.os_release == "ID=debian\nVERSION_ID=12\n"
    assert got.copyrights == {"nginx-light": copyright_text}
    assert parse_evidence("") == OsEvidence(None, {})


def test_evidence_script_runs_in_a_shell(tmp_path: Path) -> None:
    """The script itself, against a fake root: only machine-readable copyright files."""
    script = EVIDENCE_SCRIPT.replace("/usr/share/doc", str(tmp_path / "doc")).replace(
        "/etc/os-release", str(tmp_path / "os-release")
    )
    (tmp_path / "os-release").write_text("ID=debian\n")
    for name, text in (("a", "Format: https://x/\n"), ("b", "plain\n"), ("c+d", "Format: y\n")):
        (tmp_path / "doc" / name).mkdir(parents=True)
        (tmp_path / "doc" / name / "copyright").write_text(text)
    (tmp_path / "doc" / "linked").symlink_to(tmp_path / "doc" / "a")  # libfoo-dev -> libfoo
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    got = parse_evidence(out)
    assert got.os_release == "ID=debian\n"
    assert got.copyrights == {
        "a": "Format: https://x/\n",
        "c+d": "Format: y\n",
        "linked": "Format: https://x/\n",
    }


def test_oci_and_generic_purls() -> None:
    assert oci_purl("bake/web", IMAGE) == f"pkg:oci/web@{IMAGE}"
    assert oci_purl("Web", IMAGE, "reg.example:5000/team/web", "1.0-x") == (
        f"pkg:oci/web@{IMAGE}?repository_url=reg.example:5000/team/web&tag=1.0-x"
    )
    assert generic_purl("vm", "1.0+1", IMAGE) == f"pkg:generic/vm@1.0%2B1?checksum={IMAGE}"
