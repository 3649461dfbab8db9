"""Pages as HTML: Jinja2 templates with autoescape, the site's paths and its assets (pure).

Why Jinja2 with autoescape: every value from a registry (image names, revocation
reasons, check titles, package and licence names, provenance parameters) reaches a page
through ``{{ }}``, which escapes it for HTML text and attributes alike; nothing is marked
safe. ``finalize`` also makes control and bidi-override characters visible. Pages carry a
Content-Security-Policy that allows only the site's own script and style files (no
inline script, no inline style, nothing from elsewhere), so even a value that slipped
through could not run. Links are built only from validated image names and semantic
versions, percent-encoded.

Paths: ``index.html`` (and ``index-N.html``) for the overview, ``images/NAME/index.html``
for an image (a ``/`` in NAME becomes ``~``, which names cannot contain, so every image
is one folder), ``images/NAME/VERSION.html`` for a version, ``assets/`` for the CSS, the
script and the search index.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any
from urllib.parse import quote

import jinja2

from bake.deploy.catalog.facts import shown
from bake.deploy.catalog.pages import ImagePage, OverviewRow, TrustInfo, VersionPage, parent_link

ASSETS = ("catalog.css", "catalog.js", "favicon.svg")
PAGE_SIZE = 200  # overview rows per page
VERSIONS_PER_PAGE = 250  # versions per image page


def image_dir(name: str) -> str:
    return "images/" + name.replace("/", "~")


def image_path(name: str, page: int = 1) -> str:
    return f"{image_dir(name)}/index.html" if page == 1 else f"{image_dir(name)}/versions-{page}.html"


def version_path(name: str, version: str) -> str:
    return f"{image_dir(name)}/{version}.html"


def overview_path(page: int) -> str:
    return "index.html" if page == 1 else f"index-{page}.html"


def _href(path: str) -> str:
    return quote(path, safe="/~")


def _visible(value: object) -> object:
    """Every ``{{ }}`` string: control and bidi-override characters made visible."""
    return shown(value, 1 << 30) if isinstance(value, str) else value


def short(digest: object, n: int = 12) -> str:
    text = str(digest)
    algo, sep, rest = text.partition(":")
    return f"{algo}:{rest[:n]}" if sep else text[:n]


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files(__package__) / "templates")),
        autoescape=True,  # HTML: every value is escaped; nothing is marked safe
        undefined=jinja2.StrictUndefined,
        finalize=_visible,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        image_href=lambda name, page=1: _href(image_path(name, page)),
        version_href=lambda name, version: _href(version_path(name, version)),
        overview_href=lambda page: _href(overview_path(page)),
        parent_link=parent_link,
    )
    env.filters["short"] = short
    return env


def _render(template: str, **context: Any) -> bytes:
    return environment().get_template(template).render(**context).encode("utf-8")


def overview(
    rows: Sequence[OverviewRow],
    *,
    page: int,
    pages: int,
    trust: TrustInfo,
    totals: Mapping[str, int],
    outdated: Sequence[Any],
    revocations: Sequence[tuple[str, str, str, str]],
) -> bytes:
    return _render(
        "overview.html.j2",
        root="",
        rows=rows,
        page=page,
        pages=pages,
        trust=trust,
        totals=totals,
        outdated=outdated,
        revocations=revocations,
    )


def image(page: ImagePage, *, trust: TrustInfo, number: int = 1) -> bytes:
    pages = max(1, -(-len(page.rows) // VERSIONS_PER_PAGE))
    rows = page.rows[(number - 1) * VERSIONS_PER_PAGE : number * VERSIONS_PER_PAGE]
    return _render(
        "image.html.j2", root="../../", image=page, rows=rows, number=number, pages=pages, trust=trust
    )


def image_page_count(page: ImagePage) -> int:
    return max(1, -(-len(page.rows) // VERSIONS_PER_PAGE))


def version(page: VersionPage, *, trust: TrustInfo) -> bytes:
    return _render("version.html.j2", root="../../", v=page, trust=trust)


def search_index(rows: Sequence[OverviewRow]) -> bytes:
    """The overview's rows for the search box, as a script (a page opened from file://
    may load scripts but not fetch JSON). JSON with every non-ASCII character escaped is
    a valid script literal and cannot close or break out of it."""
    data = [
        [
            r.name,
            _href(image_path(r.name)),
            " ".join(f"{c} → {v}" for c, v, _s in r.heads),
            r.state,
            r.latest or "",
            _href(version_path(r.name, r.latest)) if r.latest else "",
            r.versions,
            r.revoked,
            r.updated,
        ]
        for r in rows
    ]
    return b"window.BAKE_INDEX = " + json.dumps(data, ensure_ascii=True).encode() + b";\n"


def asset(name: str) -> bytes:
    return (resources.files(__package__) / "assets" / name).read_bytes()
