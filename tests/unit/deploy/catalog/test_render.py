"""bake.deploy.catalog.render: registry text is escaped, links are encoded, pages are
bounded and carry a strict Content-Security-Policy."""

from __future__ import annotations

import json
import re
from dataclasses import replace

from bake.deploy.catalog import render
from bake.deploy.catalog.pages import ImageWalk, OverviewRow, trust_info
from bake.deploy.catalog.pictures import children_index
from bake.deploy.outdated import find_outdated
from tests.unit.deploy.catalog.site import EVIL, Built


def walk(built: Built, name: str) -> ImageWalk:
    snap = built.snapshot
    parents = {"web": ["debian-base"], "app": ["web"]}
    return ImageWalk(
        snap,
        snap.image(name),
        parents=parents,
        children=children_index(parents),
        outdated=find_outdated(snap),
        now="x",
    )


def test_a_revocation_reason_is_text_never_markup(built: Built) -> None:
    trust = trust_info(built.snapshot, "2024-05-01T12:00:00Z")
    w = walk(built, "web")
    pages = {p.version: render.version(p, trust=trust).decode() for p in w.versions()}
    assert w.page is not None
    image = render.image(w.page, trust=trust).decode()
    for html in (pages["1.1.0+1"], image):
        assert EVIL not in html and "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html
        assert len(re.findall(r"<script\b", html)) == 1  # only the site's own catalog.js
    assert 'class="banner revoked"' in pages["1.1.0+1"]
    assert 'id="revoked"' not in pages["1.0.0+1"]


def test_every_page_has_a_strict_csp_and_the_signature_status(built: Built) -> None:
    trust = trust_info(built.snapshot, "2024-05-01T12:00:00Z")
    w = walk(built, "web")
    html = render.version(next(iter(w.versions())), trust=trust).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp is not None and "default-src 'none'" in csp.group(1) and "unsafe" not in csp.group(1)
    assert "style=" not in html  # inline styles would be refused by the CSP
    assert f"root v{trust.root_version}" in html and trust.expires in html
    assert built.key.keyid[:16] in html


def test_links_are_percent_encoded_and_names_with_slashes_are_one_folder() -> None:
    assert render.version_path("team/web", "1.0.0+2") == "images/team~web/1.0.0+2.html"
    assert render.image_path("team/web", 2) == "images/team~web/versions-2.html"
    env = render.environment()
    href = env.from_string("{{ version_href('team/web', '1.0.0+2') }}").render()
    assert href == "images/team~web/1.0.0%2B2.html"


def test_hidden_characters_are_made_visible_in_any_value() -> None:
    html = render.environment().from_string("{{ x }}").render(x="a\u202eb\x07c")
    assert html == "a\ufffdb\ufffdc"


def test_the_search_index_is_a_script_that_cannot_break_out() -> None:
    row = OverviewRow(
        "web", (("</script><b>", "1.0.0+1", "passed"),), "1.0.0+1", "passed", 1, 0, "2024", "passed", False
    )
    js = render.search_index([row]).decode()
    assert js.startswith("window.BAKE_INDEX = ") and js.endswith(";\n")
    data = json.loads(js.removeprefix("window.BAKE_INDEX = ").rstrip(";\n"))
    assert (
        data[0][0] == "web"
        and data[0][1] == "images/web/index.html"
        and data[0][5] == "images/web/1.0.0%2B1.html"
    )
    assert js.isascii()


def test_image_pages_are_split(built: Built) -> None:
    trust = trust_info(built.snapshot, "x")
    w = walk(built, "web")
    list(w.versions())
    assert w.page is not None and render.image_page_count(w.page) == 1
    assert 'aria-label="pages of versions"' not in render.image(w.page, trust=trust).decode()
    many = replace(w.page, rows=w.page.rows * (render.VERSIONS_PER_PAGE // 2 + 1))
    assert render.image_page_count(many) == 2
    second = render.image(many, trust=trust, number=2).decode()
    table = second[second.index('id="version-table"') :].split("</table>")[0]
    assert 'aria-label="pages of versions"' in second and table.count('<tr class="') == 2
