"""The registry as a static web site (`bake catalog`).

Pure over a verified registry snapshot, like the rest of bake.deploy:

- ``facts.py``   what a build's signed attestations say (tests, provenance, SBOM, files),
                 each envelope verified before anything of it is read;
- ``diff.py``    what changed between two versions (packages, files);
- ``pictures.py`` the parent/children graph and the channel timeline as SVG geometry;
- ``pages.py``   the page models: overview rows, image pages, version pages;
- ``render.py``  Jinja2 templates (autoescaped) → HTML bytes; the site's paths and assets.

Writing the folder and serving it are the application layer's (bake.app.catalog).
"""
