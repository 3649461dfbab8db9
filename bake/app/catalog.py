"""`bake catalog`: the registry as a static web site, and a local server for a look at it.

Everything shown comes from one verified snapshot (the TUF client's checks, as for
`bake resolve`) and from attestations opened with the registry's images-role keys (see
bake.deploy.catalog). Pages are written into a fresh folder beside ``out`` and switched
in with one rename, so a web server serving ``out`` never shows half a catalog; a folder
that is not a catalog is never replaced.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bake.app.session import RegistryAccess, Session
from bake.deploy.catalog import render
from bake.deploy.catalog.pages import ImageWalk, OverviewRow, TrustInfo, trust_info
from bake.deploy.catalog.pictures import children_index, parents_of
from bake.deploy.outdated import Outdated, find_outdated
from bake.errors import BakeError
from bake.infra.fsutil import fsync_dir, replace_dir, temp_name
from bake.registry.model import format_time

SCHEMA = "bake.catalog/v1"
MARKER = "catalog.json"
MAX_REVOCATIONS = 100  # on the overview; every one is on its image page
MAX_OUTDATED = 200
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'"
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CatalogResult:
    out: Path
    registry: str
    serial: int
    images: int
    versions: int
    pages: int
    bytes: int
    largest: tuple[str, int]  # the largest page: path, size
    seconds: float
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "out": str(self.out),
            "index": str(self.out / "index.html"),
            "registry": self.registry,
            "serial": self.serial,
            "images": self.images,
            "versions": self.versions,
            "pages": self.pages,
            "bytes": self.bytes,
            "largest_page": {"path": self.largest[0], "bytes": self.largest[1]},
            "seconds": round(self.seconds, 3),
            "problems": list(self.problems),
        }


@dataclass
class _Site:
    """A folder being written: pages counted and measured (no fsync per page: the folder
    becomes visible only when complete, in one rename)."""

    root: Path
    pages: int = 0
    size: int = 0
    largest: tuple[str, int] = ("", 0)
    made: set[Path] = field(default_factory=set)

    def write(self, rel: str, data: bytes, *, page: bool = True) -> None:
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):
            raise BakeError(f"internal error: catalog page {rel!r} would leave the site folder")
        if path.parent not in self.made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.made.add(path.parent)
        path.write_bytes(data)
        self.size += len(data)
        if page:
            self.pages += 1
            if len(data) > self.largest[1]:
                self.largest = (rel, len(data))


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that a catalog did not write."""
    if not out.exists():
        return
    if not out.is_dir():
        raise BakeError(f"{out} exists and is not a folder", "choose another --out", exit_code=2)
    if not any(out.iterdir()):
        return
    try:
        marker = json.loads((out / MARKER).read_bytes())
    except (OSError, ValueError):
        marker = None
    if not (isinstance(marker, dict) and marker.get("schema") == SCHEMA):
        raise BakeError(
            f"{out} is not empty and holds no bake catalog ({MARKER}): refusing to replace it",
            "choose an empty or new folder for --out",
            exit_code=2,
        )


def generate(
    session: Session, access: RegistryAccess, out: Path, *, progress: Progress | None = None
) -> CatalogResult:
    """Write the catalog of a registry into ``out``."""
    start = time.perf_counter()
    out = out.resolve()
    _check_out(out)
    snapshot = session.reader(access).snapshot
    trust = trust_info(snapshot, format_time(session.now()))
    names = snapshot.names()
    docs = {name: snapshot.image(name) for name in names}
    parents = {name: parents_of(doc) for name, doc in docs.items()}
    children = children_index(parents)
    outdated = find_outdated(snapshot)
    tmp = temp_name(out)
    tmp.mkdir(parents=True)
    site = _Site(tmp.resolve())
    try:
        rows: list[OverviewRow] = []
        problems: list[str] = []
        revocations: list[tuple[str, str, str, str]] = []
        versions = 0
        for i, name in enumerate(names, 1):
            walk = ImageWalk(
                snapshot,
                docs[name],
                parents=parents,
                children=children,
                outdated=outdated,
                now=trust.generated,
            )
            for page in walk.versions():
                site.write(render.version_path(name, page.version), render.version(page, trust=trust))
                versions += 1
            assert walk.page is not None and walk.row is not None
            for n in range(1, render.image_page_count(walk.page) + 1):
                site.write(render.image_path(name, n), render.image(walk.page, trust=trust, number=n))
            rows.append(walk.row)
            problems.extend(walk.problems)
            revocations.extend((at, name, v, reason) for v, at, reason in walk.page.revocations)
            if progress is not None:
                progress(i, len(names))
        revocations.sort(reverse=True)
        _overview(site, rows, trust, revocations, outdated, versions)
        for asset in render.ASSETS:
            site.write(f"assets/{asset}", render.asset(asset), page=False)
        site.write("assets/search-index.js", render.search_index(rows), page=False)
        marker = {
            "schema": SCHEMA,
            "registry": snapshot.url,
            "serial": snapshot.serial,
            "generated": trust.generated,
            "images": len(names),
            "versions": versions,
            "problems": problems,
        }
        site.write(MARKER, json.dumps(marker, indent=2, sort_keys=True).encode(), page=False)
        fsync_dir(tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CatalogResult(
        out,
        snapshot.url,
        snapshot.serial,
        len(names),
        versions,
        site.pages,
        site.size,
        site.largest,
        time.perf_counter() - start,
        tuple(problems),
    )


def _overview(
    site: _Site,
    rows: list[OverviewRow],
    trust: TrustInfo,
    revocations: list[tuple[str, str, str, str]],
    outdated: list[Outdated],
    versions: int,
) -> None:
    totals = {
        "images": len(rows),
        "versions": versions,
        "channels": sum(len(r.heads) for r in rows),
        "revoked": len(revocations),
        "outdated": len(outdated),
        "untrusted": sum(r.state == "untrusted" for r in rows),
    }
    pages = max(1, -(-len(rows) // render.PAGE_SIZE))
    for n in range(1, pages + 1):
        chunk = rows[(n - 1) * render.PAGE_SIZE : n * render.PAGE_SIZE]
        html = render.overview(
            chunk,
            page=n,
            pages=pages,
            trust=trust,
            totals=totals,
            outdated=outdated[:MAX_OUTDATED],
            revocations=revocations[:MAX_REVOCATIONS],
        )
        site.write(render.overview_path(n), html)


# --------------------------------------------------------------------------- serving


class _Handler(http.server.SimpleHTTPRequestHandler):
    """The site's files, with the pages' own security headers; no directory listings."""

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404, "no listing")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a quick look needs no access log."""


@dataclass(frozen=True)
class Served:
    url: str
    folder: Path


@contextlib.contextmanager
def serving(folder: Path, port: int = 8000, host: str = "127.0.0.1") -> Iterator[Served]:
    """Serve ``folder`` on ``host:port`` (port 0: any free one) until the block ends."""
    folder = folder.resolve()
    if not (folder / "index.html").is_file():
        raise BakeError(f"{folder} holds no catalog", "generate one first: bake catalog --out DIR")
    handler = functools.partial(_Handler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise BakeError(f"cannot serve on {host}:{port}: {e.strerror or e}", "pick another --port") from e
    thread = threading.Thread(target=server.serve_forever, name="bake-catalog-server", daemon=True)
    thread.start()
    try:
        yield Served(f"http://{host}:{server.server_address[1]}/", folder)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
