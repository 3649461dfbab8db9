"""`bake catalog`: the registry as a static web site (and a local server for a look)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from bake.ui.options import JsonOpt, RegistryOpt, TrustOpt, access, handled, session
from bake.ui.output import is_ci, line, print_json
from bake.ui.progress import make_reporter


@handled
def catalog_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the site into.")] = Path(
        "catalog"
    ),
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Then serve the folder on 127.0.0.1 until interrupted.")
    ] = False,
    port: Annotated[int, typer.Option("--port", help="Port for --serve (0: any free port).")] = 8000,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="Processes writing pages (default: one per CPU).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the registry as a static web site: images, channels, versions, test results,
    SBOMs and what changed between versions, everything verified first. Open OUT/index.html
    from disk or put the folder on any static host. Exit 1 when something did not verify
    (it is shown as such, never its content)."""
    reporter = make_reporter(plain=as_json or is_ci())
    step = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - step[0] >= 1.0:
            step[0] = now
            reporter.phase("catalog", f"{done}/{total} images")

    try:
        from bake.app import catalog  # its templates and page code: only for this command

        result = catalog.generate(session(), access(registry, trust), out, jobs=jobs, progress=progress)
    finally:
        reporter.close()
    if as_json:
        print_json(result.to_json())
    else:
        size, largest = result.bytes / 1e6, result.largest[1] / 1e3
        line(
            f"wrote {result.pages} pages ({size:.1f} MB, largest {largest:.0f} kB) for {result.images} "
            f"images and {result.versions} versions in {result.seconds:.1f} s: {result.out / 'index.html'}"
        )
        for problem in result.problems[:20]:
            line(f"NOT VERIFIED: {problem}")
    if serve:
        with catalog.serving(result.out, port) as served:
            line(f"serving {served.folder} at {served.url} (Ctrl-C stops)")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    if not result.ok:
        raise typer.Exit(1)
