"""bake.app.catalog and `bake catalog`: a verified registry written as a site, switched in
whole, never over a foreign folder; served on 127.0.0.1."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bake.app import catalog
from bake.app.session import RegistryAccess, Session
from bake.cli import app
from bake.errors import BakeError
from tests.unit.deploy.catalog.site import Built, build_registry


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_registry(tmp_path_factory.mktemp("catalog-app"))


def session(built: Built, tmp_path: Path) -> Session:
    return Session.load(tmp_path, {"BAKE_STATE_DIR": str(tmp_path / "state"), "PATH": os.environ["PATH"]})


def access(built: Built) -> RegistryAccess:
    return RegistryAccess(built.url, (str(built.pub),))


def test_generate_writes_every_page_and_names_what_did_not_verify(built: Built, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    out = tmp_path / "site"
    result = catalog.generate(
        session(built, tmp_path), access(built), out, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert result.images == 3 and result.versions == 5 and result.pages == 1 + 3 + 5
    assert not result.ok and {p.split(":")[0] for p in result.problems} == {"app@0.1.0+1"}
    for rel in ("index.html", "images/web/index.html", "images/web/1.1.0+1.html", "assets/catalog.js"):
        assert (out / rel).is_file(), rel
    marker = json.loads((out / "catalog.json").read_text())
    assert marker["schema"] == catalog.SCHEMA and marker["serial"] == result.serial
    assert result.largest[1] == max(p.stat().st_size for p in out.rglob("*.html"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []
    again = catalog.generate(session(built, tmp_path), access(built), out)  # replaces its own catalog
    assert again.pages == result.pages


def test_a_folder_that_is_no_catalog_is_never_replaced(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BakeError, match="refusing to replace it") as info:
        catalog.generate(session(built, tmp_path), access(built), out)
    assert info.value.exit_code == 2 and (out / "notes.txt").read_text() == "keep me"


def test_serving_answers_on_loopback_with_the_pages_security_headers(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "site"
    catalog.generate(session(built, tmp_path), access(built), out)
    with catalog.serving(out, port=0) as served:
        assert served.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(served.url + "images/web/1.1.0%2B1.html") as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Security-Policy"] == catalog.CSP
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "web@1.1.0+1" in body
        with pytest.raises(urllib.error.HTTPError) as listing:
            urllib.request.urlopen(served.url + "images/")
        assert listing.value.code == 404
        listing.value.close()
    with pytest.raises(BakeError, match="holds no catalog"), catalog.serving(tmp_path / "nothing", port=0):
        pass


def test_cli_catalog_json_and_exit_code(built: Built, tmp_path: Path) -> None:
    env = {"BAKE_STATE_DIR": str(tmp_path / "state"), "BAKE_TRUST": str(built.pub)}
    out = tmp_path / "cli-site"
    result = CliRunner().invoke(
        app, ["catalog", "--registry", built.url, "--out", str(out), "--json"], env=env
    )
    assert result.exit_code == 1, result.output  # app@0.1.0+1 did not verify
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["images"] == 3 and doc["index"] == str(out.resolve() / "index.html")
    assert doc["largest_page"]["bytes"] > 0 and doc["problems"]
