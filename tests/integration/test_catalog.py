"""`bake catalog`, for real: two bakes of an image published, one revoked, the site checked
in headless Chromium (Debian's chromium, driven through the DevTools protocol by
Playwright): the overview lists the image and its channel, the version page shows every
check's result and the package diff, the revoked version is marked and its reason is
text, pages log no console error and request nothing outside the site, from file:// and
from `--serve` alike. Screenshots are kept in $BAKE_TEST_ARTIFACTS (default
.bake/test-artifacts/catalog)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, sync_playwright
from typer.testing import CliRunner

from bake.app import catalog
from bake.infra.packer import PackerInfo
from bake.record import load
from bake.targets.base import Outcome
from tests.conftest import RECIPES, ROOT
from tests.integration.conftest import Bakes, plan_of, require

pytestmark = pytest.mark.integration

cli = CliRunner()
REASON = 'CVE-2026-4242 in less <script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
RECIPE = """\
name: tools
version: {version}
extends: debian-base
steps:
  - packages: {packages}
verify:
  - package: {{name: less}}
  - command: {{run: "less --version", stdout: "less"}}
  - name: a check for VMs only
    when: target == 'qemu'
    command: {{run: "systemctl is-system-running"}}
"""
ARTIFACTS = Path(os.environ.get("BAKE_TEST_ARTIFACTS", ROOT / ".bake" / "test-artifacts" / "catalog"))


@pytest.fixture(scope="module")
def two_bakes(
    context: Bakes, packer_info: PackerInfo, baked_web: Outcome, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Outcome, Outcome]:
    """tools 1.0.0 (less) and 1.1.0 (less, netbase), on the session's debian-base."""
    folder = tmp_path_factory.mktemp("tools-recipes")
    outcomes = []
    for version, packages in (("1.0.0", "[less]"), ("1.1.0", "[less, netbase]")):
        recipe = folder / f"tools-{version}.yaml"
        recipe.write_text(RECIPE.format(version=version, packages=packages))
        outcomes.append(context.bake(plan_of(recipe, packer_info, search_path=[RECIPES])))
    return outcomes[0], outcomes[1]


def run(env: Mapping[str, str | None], *args: str, code: int = 0) -> str:
    from bake.cli import app

    result = cli.invoke(app, list(args), env=env)
    assert result.exit_code == code, result.output
    return result.stdout


@pytest.fixture(scope="module")
def site(
    context: Bakes, two_bakes: tuple[Outcome, Outcome], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Published, promoted, the first revoked; then the catalog."""
    folder = tmp_path_factory.mktemp("catalog")
    env = {"BAKE_STATE_DIR": str(context.state), "DOCKER_HOST": context.engine.host}
    run({**env, "BAKE_KEY_PASSPHRASE": None}, "keygen", "--out", str(folder / "ci"))  # unset: no passphrase
    env |= {
        "BAKE_SIGNING_KEY": str(folder / "ci.key"),
        "BAKE_TRUST": str(folder / "ci.pub"),
        "BAKE_REGISTRY": f"dir:{folder / 'registry'}",
    }
    first, second = two_bakes
    run(env, "publish", str(first.record_path))
    run(env, "promote", "tools@1.0.0", "stable")
    run(env, "publish", str(second.record_path))
    run(env, "promote", "tools@1.1.0", "stable")
    run(env, "revoke", "tools@1.0.0+1", "--reason", REASON)
    out = json.loads(run(env, "catalog", "--out", str(folder / "site"), "--json"))
    assert out["ok"] is True and out["problems"] == [], out
    assert out["images"] == 2 and out["versions"] == 3  # debian-base (the parent) and tools
    assert out["largest_page"]["bytes"] < 2_000_000
    return Path(out["out"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require("chromium")
    with sync_playwright() as pw:
        # Debian's chromium; as root it needs --no-sandbox
        b = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Visit:
    """A page in Chromium, with every console message, page error and request it made."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.console: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url, wait_until="load")

    def _dialog(self, dialog: Dialog) -> None:  # an alert() would mean injected script ran
        self.console.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def clean(self, inside: str) -> None:
        assert [m for m in self.console if not m.startswith(("log:", "debug:"))] == []
        assert [u for u in self.requests if not u.startswith(inside)] == []
        assert self.page.evaluate("typeof window.pwned") == "undefined"


def test_the_site_in_chromium(site: Path, browser: Browser, two_bakes: tuple[Outcome, Outcome]) -> None:
    root = site.as_uri() + "/"
    overview = Visit(browser, root + "index.html")
    rows = overview.page.locator("#images tbody tr")
    tools = rows.filter(has_text="tools")
    assert tools.count() == 1 and "stable → 1.1.0+1" in tools.inner_text()
    assert f"tools@1.0.0+1\t{REASON}" in overview.page.locator("#revocations").inner_text()
    overview.page.fill("#search", "debian")  # searches every image through the search index
    assert (
        overview.page.locator("#images tbody:not([hidden]) tr").all_inner_texts()[0].startswith("debian-base")
    )
    overview.shot("overview.png")
    overview.clean(root)

    newer = Visit(browser, root + "images/tools/1.1.0%2B1.html")
    checks = {
        r.locator("td").nth(0).inner_text(): r.locator("td").nth(1).inner_text()
        for r in newer.page.locator("#checks tbody tr").all()
    }
    recorded = load(two_bakes[1].record_path).verify["results"]
    assert checks == {r["title"]: r["outcome"] for r in recorded}  # every check, as verified
    assert "skipped" in checks.values() and "passed" in checks.values()
    diff = newer.page.locator("#package-diff").inner_text()
    assert "added" in diff and "netbase" in diff
    assert "/etc/services" in (newer.page.locator("#changes").text_content() or "")  # netbase's files
    assert newer.page.locator("#status").inner_text() == "passed"
    stated = newer.page.locator("#packages tbody tr").filter(has_not_text="not stated")
    assert stated.count() > 10  # licences from the image's copyright files, through the signed SBOM
    newer.shot("version.png")
    newer.clean(root)

    revoked = Visit(browser, root + "images/tools/1.0.0%2B1.html")
    banner = revoked.page.locator("#revoked")
    assert banner.is_visible() and REASON in banner.inner_text()  # the reason, as text
    assert revoked.page.locator("#status").inner_text() == "revoked"
    revoked.shot("revoked.png")
    revoked.clean(root)

    image = Visit(browser, root + "images/tools/index.html")
    assert image.page.locator("svg.graph .node", has_text="debian-base").count() == 1
    assert image.page.locator("svg.timeline .mark").count() == 2
    image.shot("image.png")
    image.clean(root)


def test_the_served_site_in_chromium(site: Path, browser: Browser) -> None:
    with catalog.serving(site, port=0) as served:
        page = Visit(browser, served.url)
        assert page.page.locator("#images tbody tr", has_text="tools").count() == 1
        header = page.page.locator("#images thead th").first
        header.click()  # by name, ascending
        assert page.page.locator("#images tbody tr").first.inner_text().startswith("debian-base")
        header.click()  # descending
        assert page.page.locator("#images tbody tr").first.inner_text().startswith("tools")
        page.clean(served.url)
