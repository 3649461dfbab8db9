"""`bake catalog`: the registry as a static web site, and a local server for a look at it.

Everything shown comes from one verified snapshot (the TUF client's checks, as for
`bake resolve`) and from attestations opened with the registry's images-role keys (see
bake.deploy.catalog). Pages are written into a fresh folder beside ``out`` and switched
in with one rename, so a web server serving ``out`` never shows half a catalog; a folder
that is not a catalog is never replaced.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import http.server
import json
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bake.app.session import RegistryAccess, Session
from bake.deploy.catalog import render
from bake.deploy.catalog.pages import ImageWalk, OverviewRow, TrustInfo, trust_info
from bake.deploy.catalog.pictures import children_index, parents_of
from bake.deploy.outdated import Outdated, find_outdated
from bake.errors import BakeError
from bake.infra.fsutil import fsync_dir, replace_dir, temp_name
from bake.registry.client import Snapshot
from bake.registry.model import ImageDoc, format_time

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

    def add(self, other: _Site) -> None:
        """Count what another writer (a worker) wrote into the same folder."""
        self.pages += other.pages
        self.size += other.size
        if other.largest[1] > self.largest[1]:
            self.largest = other.largest


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


@dataclass(frozen=True)
class _Work:
    """What every image's pages are made from (shared with forked workers, never pickled)."""

    snapshot: Snapshot
    docs: Mapping[str, ImageDoc]
    parents: Mapping[str, Sequence[str]]
    children: Mapping[str, Sequence[str]]
    outdated: Sequence[Outdated]
    trust: TrustInfo
    root: Path


@dataclass
class _Done:
    """What writing some images' pages gave: the overview rows and the counts."""

    site: _Site
    rows: list[OverviewRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    revocations: list[tuple[str, str, str, str]] = field(default_factory=list)
    versions: int = 0


_WORK: list[_Work] = []  # set before the worker processes fork


def _write_images(names: Sequence[str]) -> _Done:
    work = _WORK[0]
    done = _Done(_Site(work.root))
    for name in names:
        walk = ImageWalk(
            work.snapshot,
            work.docs[name],
            parents=work.parents,
            children=work.children,
            outdated=work.outdated,
            now=work.trust.generated,
        )
        for page in walk.versions():
            done.site.write(render.version_path(name, page.version), render.version(page, trust=work.trust))
            done.versions += 1
        assert walk.page is not None and walk.row is not None
        for n in range(1, render.image_page_count(walk.page) + 1):
            done.site.write(render.image_path(name, n), render.image(walk.page, trust=work.trust, number=n))
        done.rows.append(walk.row)
        done.problems.extend(walk.problems)
        done.revocations.extend((at, name, v, reason) for v, at, reason in walk.page.revocations)
    return done


def _chunks(names: Sequence[str], size: int) -> list[Sequence[str]]:
    return [names[i : i + size] for i in range(0, len(names), size)]


def _all_images(names: Sequence[str], jobs: int, progress: Progress | None) -> Iterator[_Done]:
    """Each image's pages, by ``jobs`` processes (forked: they share the verified snapshot
    as it is in memory; each returns only its rows and counts)."""
    chunks = _chunks(names, max(1, min(25, len(names) // (jobs * 4) or 1)))
    finished = 0
    if jobs <= 1 or len(chunks) < 2:
        results: Iterator[_Done] = map(_write_images, chunks)
        for done in results:
            finished += len(done.rows)
            if progress is not None:
                progress(finished, len(names))
            yield done
        return
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        for done in pool.map(_write_images, chunks):
            finished += len(done.rows)
            if progress is not None:
                progress(finished, len(names))
            yield done


def generate(
    session: Session,
    access: RegistryAccess,
    out: Path,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> CatalogResult:
    """Write the catalog of a registry into ``out`` (``jobs`` processes; default: one per
    CPU)."""
    start = time.perf_counter()
    out = out.resolve()
    _check_out(out)
    snapshot = session.reader(access).snapshot
    trust = trust_info(snapshot, format_time(session.now()))
    names = snapshot.names()
    docs = {name: snapshot.image(name) for name in names}
    parents = {name: parents_of(doc) for name, doc in docs.items()}
    tmp = temp_name(out)
    tmp.mkdir(parents=True)
    site = _Site(tmp.resolve())
    try:
        work = _Work(
            snapshot, docs, parents, children_index(parents), find_outdated(snapshot), trust, site.root
        )
        _WORK[:] = [work]
        total = _Done(site)
        for done in _all_images(names, jobs or os.cpu_count() or 1, progress):
            total.rows += done.rows
            total.problems += done.problems
            total.revocations += done.revocations
            total.versions += done.versions
            site.add(done.site)
        _WORK.clear()
        total.revocations.sort(reverse=True)
        _overview(site, total.rows, trust, total.revocations, work.outdated, total.versions)
        for asset in render.ASSETS:
            site.write(f"assets/{asset}", render.asset(asset), page=False)
        site.write("assets/search-index.js", render.search_index(total.rows), page=False)
        marker = {
            "schema": SCHEMA,
            "registry": snapshot.url,
            "serial": snapshot.serial,
            "generated": trust.generated,
            "images": len(names),
            "versions": total.versions,
            "problems": total.problems,
        }
        site.write(MARKER, json.dumps(marker, indent=2, sort_keys=True).encode(), page=False)
        fsync_dir(tmp)
        replace_dir(tmp, out)
    finally:
        _WORK.clear()
        shutil.rmtree(tmp, ignore_errors=True)
    return CatalogResult(
        out,
        snapshot.url,
        snapshot.serial,
        len(names),
        total.versions,
        site.pages,
        site.size,
        site.largest,
        time.perf_counter() - start,
        tuple(total.problems),
    )


def _overview(
    site: _Site,
    rows: list[OverviewRow],
    trust: TrustInfo,
    revocations: list[tuple[str, str, str, str]],
    outdated: Sequence[Outdated],
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
