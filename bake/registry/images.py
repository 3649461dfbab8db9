"""Copying images by digest: Docker engine <-> OCI registry or OCI image layout (skopeo).

``push_docker_image`` copies an engine's image (by image ID, never by a tag someone could
move) to ``HOST[:PORT]/REPO:TAG`` and reports the manifest digest skopeo pushed; deployers
pin ``HOST[:PORT]/REPO@sha256:…``. The Docker v2s2 manifest the engine has is kept (no
``--format oci``): its config blob travels unchanged, so an engine that pulls the ref shows
the very image ID that was baked, which drift checks compare.

``export_docker_image_to_layout`` writes the image into an OCI image layout (for ``dir:``
registries) and pins ``oci-layout://DIR@sha256:…``. A layout holds OCI manifests only, and
converting rewrites the config: after a pull its image ID is ``config_digest``, not the
baked ID. Writers of one layout must take turns (the registry lock): skopeo rewrites the
layout's ``index.json`` in place.

Both take a ``source`` instead of the engine's image: the OCI layout the docker target's
normalize wrote (``oci:DIR:TAG``), which holds the same config (so the same image ID)
and a manifest with the image's annotations, which an engine does not keep. Into a layout
it is copied byte for byte (``--preserve-digests``: the published digest is the
reproducible one); to a registry as an OCI manifest with compressed layers.

argv is built by pure functions; skopeo runs through the process gateway. Credentials
(``BAKE_REGISTRY_USER``/``BAKE_REGISTRY_PASSWORD``) reach skopeo in a private auth file,
never on a command line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from bake.attest.digest import is_digest, sha256_file
from bake.errors import RegistryError, ToolError, TrustError
from bake.infra.process import Call, Runner
from bake.registry.model import LAYOUT_SCHEME
from bake.registry.ocistore import (
    Credentials,
    OciLocation,
)
from bake.targets.docker import engine as docker

REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"
QCOW2_ARTIFACT_TYPE = "application/vnd.bake.disk.qcow2.v1"
PULLED_LAYOUT_REPO = "bake-layout"

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class PushedImage:
    ref: str  # HOST[:PORT]/REPO@sha256:… or oci-layout://DIR@sha256:…
    digest: str  # the manifest digest, as stored
    image_id: str  # the engine's image that was copied
    config_digest: str  # the image ID an engine shows after pulling ``ref``


@dataclass(frozen=True)
class RegistryRef:
    """``HOST[:PORT]/REPO@sha256:…``, parsed."""

    location: OciLocation  # prefix = the repository
    digest: str

    @classmethod
    def parse(cls, ref: str) -> RegistryRef:
        name, _, digest = ref.partition("@")
        if not is_digest(digest):
            raise RegistryError(f"{ref!r} is not pinned by digest", "expected HOST[:PORT]/REPO@sha256:<hex>")
        location = OciLocation.parse(name)
        if not location.prefix:
            raise RegistryError(f"{ref!r} names no repository", "expected HOST[:PORT]/REPO@sha256:<hex>")
        return cls(location, digest)

    @property
    def repository(self) -> str:
        return self.location.prefix

    def __str__(self) -> str:
        return f"{self.location.host}/{self.location.prefix}@{self.digest}"


def _check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise RegistryError(
            f"{tag!r} is not a valid image tag", "use letters, digits, '_', '.', '-' (max 128)"
        )
    return tag


def parse_repo(dest_repo: str) -> OciLocation:
    """``HOST[:PORT]/REPO`` -> location whose prefix is the repository."""
    location = OciLocation.parse(dest_repo)
    if not location.prefix:
        raise RegistryError(f"{dest_repo!r} names no repository", "expected HOST[:PORT]/REPO")
    return location


def parse_layout_ref(ref: str) -> tuple[Path, str]:
    """``oci-layout://DIR@sha256:…`` -> (DIR, digest)."""
    location, _, digest = ref.removeprefix(LAYOUT_SCHEME).rpartition("@")
    if not ref.startswith(LAYOUT_SCHEME) or not location or not is_digest(digest):
        raise RegistryError(
            f"{ref!r} is not an OCI layout reference", "expected oci-layout://DIR@sha256:<hex>"
        )
    return Path(location), digest


# --------------------------------------------------------------------------- argv (pure)


def copy_argv(
    src: str,
    dest: str,
    *,
    src_daemon_host: str | None = None,
    dest_daemon_host: str | None = None,
    src_insecure: bool = False,
    dest_insecure: bool = False,
    digestfile: Path | None = None,
    authfile: Path | None = None,
    preserve_digests: bool = False,
) -> tuple[str, ...]:
    argv = ["skopeo", "copy", "--quiet"]
    if preserve_digests:  # an OCI layout into an OCI layout, byte for byte (same digest)
        argv += ["--preserve-digests", "--dest-oci-accept-uncompressed-layers"]
    if src_daemon_host:
        argv += ["--src-daemon-host", src_daemon_host]
    if dest_daemon_host:
        argv += ["--dest-daemon-host", dest_daemon_host]
    if src_insecure:
        argv.append("--src-tls-verify=false")
    if dest_insecure:
        argv.append("--dest-tls-verify=false")
    if authfile is not None:
        argv += ["--src-authfile", os.fspath(authfile), "--dest-authfile", os.fspath(authfile)]
    if digestfile is not None:
        argv += ["--digestfile", os.fspath(digestfile)]
    return (*argv, "--", src, dest)


def push_argv(
    docker_host: str,
    image_id: str,
    dest_repo: str,
    tag: str,
    *,
    digestfile: Path,
    authfile: Path | None = None,
    source: str | None = None,
) -> tuple[str, ...]:
    location = parse_repo(dest_repo)
    return copy_argv(
        source or f"docker-daemon:{image_id}",
        f"docker://{location.host}/{location.prefix}:{_check_tag(tag)}",
        src_daemon_host=None if source else docker_host,
        dest_insecure=location.insecure,
        digestfile=digestfile,
        authfile=authfile,
    )


def layout_argv(
    docker_host: str,
    image_id: str,
    layout_dir: Path,
    tag: str,
    *,
    digestfile: Path,
    source: str | None = None,
) -> tuple[str, ...]:
    return copy_argv(
        source or f"docker-daemon:{image_id}",
        f"oci:{os.fspath(layout_dir)}:{_check_tag(tag)}",
        src_daemon_host=None if source else docker_host,
        digestfile=digestfile,
        preserve_digests=bool(source and source.startswith("oci:")),
    )


def inspect_argv(ref: RegistryRef, *, authfile: Path | None = None) -> tuple[str, ...]:
    argv = ["skopeo", "inspect", "--raw"]
    if ref.location.insecure:
        argv.append("--tls-verify=false")
    if authfile is not None:
        argv += ["--authfile", os.fspath(authfile)]
    return (*argv, "--", f"docker://{ref}")


def auth_json(host: str, credentials: Credentials) -> bytes:
    """A containers-auth.json granting ``credentials`` for ``host``."""
    token = base64.b64encode(f"{credentials.user}:{credentials.password}".encode()).decode("ascii")
    return json.dumps({"auths": {host: {"auth": token}}}).encode()


def layout_tag(index_json: bytes, digest: str, layout: Path) -> str:
    """The tag (``ref.name``) under which the layout's ``index.json`` lists ``digest``:
    skopeo 1.9 cannot read a layout image by digest."""
    try:
        index = json.loads(index_json)
    except (ValueError, UnicodeDecodeError):
        raise TrustError(f"{layout}/index.json is not valid JSON") from None
    manifests = index.get("manifests") if isinstance(index, dict) else None
    for entry in manifests if isinstance(manifests, list) else ():
        if not isinstance(entry, dict) or entry.get("digest") != digest:
            continue
        annotations = entry.get("annotations")
        tag = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
        if isinstance(tag, str) and _TAG.fullmatch(tag):
            return tag
    raise RegistryError(
        f"the OCI layout {layout} has no tagged image {digest}",
        "the layout was changed after publishing, or the reference is wrong",
    )


def config_digest(manifest: bytes, what: str) -> str:
    try:
        doc = json.loads(manifest)
    except (ValueError, UnicodeDecodeError):
        raise TrustError(f"{what} is not valid JSON") from None
    config = doc.get("config") if isinstance(doc, dict) else None
    digest = config.get("digest") if isinstance(config, dict) else None
    if not is_digest(digest):
        raise TrustError(f"{what} names no config digest")
    return str(digest)


def local_name(source: RegistryRef | tuple[Path, str]) -> str:
    """The engine name a pulled image gets: ``REPO:sha256-<hex>`` (a copy needs a tag)."""
    if isinstance(source, RegistryRef):
        return f"{source.location.host}/{source.repository}:{source.digest.replace(':', '-')}"
    return f"{PULLED_LAYOUT_REPO}:{source[1].replace(':', '-')}"


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def _scratch(host: str | None, environ: Mapping[str, str] | None) -> Iterator[tuple[Path, Path | None]]:
    """A private folder for skopeo's digest file and, if credentials are set, auth file."""
    creds = Credentials.from_env(os.environ if environ is None else environ)
    with tempfile.TemporaryDirectory(prefix="bake-skopeo-") as tmp:  # mode 0700
        folder = Path(tmp)
        authfile = None
        if creds is not None and host is not None:
            authfile = folder / "auth.json"
            fd = os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(auth_json(host, creds))
        yield folder / "digest", authfile


def _read_digest(path: Path, call: tuple[str, ...]) -> str:
    try:
        digest = path.read_text().strip()
    except OSError:
        digest = ""
    if not is_digest(digest):
        raise ToolError(f"skopeo wrote no manifest digest (command: {' '.join(call[:3])} …)")
    return digest


def push_docker_image(
    runner: Runner,
    docker_host: str,
    image_id: str,
    dest_repo: str,
    tag: str,
    *,
    environ: Mapping[str, str] | None = None,
    source: str | None = None,
) -> PushedImage:
    """Copy the engine's image ``image_id`` to ``dest_repo:tag``; pin it by digest.
    *source* (``oci:LAYOUT:TAG``, the same image as written by normalize, annotations
    and all) is copied instead of the engine's image where given."""
    location = parse_repo(dest_repo)
    with _scratch(location.host, environ) as (digestfile, authfile):
        argv = push_argv(
            docker_host, image_id, dest_repo, tag, digestfile=digestfile, authfile=authfile, source=source
        )
        runner(Call(argv=argv))
        digest = _read_digest(digestfile, argv)
        ref = RegistryRef(location, digest)
        # skopeo checks that the manifest it reads matches the digest of the reference.
        manifest = runner(Call(argv=inspect_argv(ref, authfile=authfile))).stdout.encode()
    return PushedImage(str(ref), digest, image_id, config_digest(manifest, f"the manifest of {ref}"))


def export_docker_image_to_layout(
    runner: Runner, docker_host: str, image_id: str, layout_dir: Path, tag: str, *, source: str | None = None
) -> PushedImage:
    """Copy the engine's image ``image_id`` into the OCI layout ``layout_dir`` as ``tag``;
    *source* (``oci:LAYOUT:TAG``) instead where given, byte for byte: the same digest."""
    layout = layout_dir.resolve()
    layout.parent.mkdir(parents=True, exist_ok=True)
    with _scratch(None, None) as (digestfile, _):
        argv = layout_argv(docker_host, image_id, layout, tag, digestfile=digestfile, source=source)
        runner(Call(argv=argv))
        digest = _read_digest(digestfile, argv)
    manifest = _layout_manifest(layout, digest)
    if layout_tag((layout / "index.json").read_bytes(), digest, layout) != tag:
        raise RegistryError(f"{tag!r} in {layout} was retagged while the image was written")
    config = config_digest(manifest, f"the manifest {digest} in {layout}")
    return PushedImage(f"{LAYOUT_SCHEME}{layout}@{digest}", digest, image_id, config)


def _layout_manifest(layout: Path, digest: str) -> bytes:
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    if not path.is_file():
        raise RegistryError(f"manifest {digest} is missing from the OCI layout {layout}")
    if sha256_file(path) != digest:
        raise TrustError(f"manifest {digest} in the OCI layout {layout} was altered")
    return path.read_bytes()


def pull_to_docker(
    runner: Runner,
    docker_host: str,
    ref: str,
    *,
    name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Copy ``ref`` (``HOST/REPO@sha256:…``, ``oci-layout://DIR@sha256:…`` or ``oci:DIR:TAG``) into the engine
    as ``name`` (default :func:`local_name`); returns the image ID it got there."""
    if ref.startswith(LAYOUT_SCHEME):
        layout, digest = parse_layout_ref(ref)
        _layout_manifest(layout, digest)  # layers and config are checked by skopeo as it reads
        tag = layout_tag((layout / "index.json").read_bytes(), digest, layout)
        target = name or local_name((layout, digest))
        argv = copy_argv(f"oci:{layout}:{tag}", f"docker-daemon:{target}", dest_daemon_host=docker_host)
        runner(Call(argv=argv))
    elif ref.startswith("oci:"):  # oci:DIR:TAG, as `bake resolve` prints for a dir: registry
        layout_text, _, tag = ref.removeprefix("oci:").rpartition(":")
        layout = Path(layout_text)
        target = name or f"{PULLED_LAYOUT_REPO}:{_check_tag(tag)}"
        argv = copy_argv(f"oci:{layout}:{tag}", f"docker-daemon:{target}", dest_daemon_host=docker_host)
        runner(Call(argv=argv))
    else:
        parsed = RegistryRef.parse(ref.removeprefix("docker://"))
        target = name or local_name(parsed)
        with _scratch(parsed.location.host, environ) as (_, authfile):
            argv = copy_argv(
                f"docker://{parsed}",
                f"docker-daemon:{target}",
                dest_daemon_host=docker_host,
                src_insecure=parsed.location.insecure,
                authfile=authfile,
            )
            runner(Call(argv=argv))
    image = docker.image_id(runner, docker.Engine(docker_host), target)
    if image is None:
        raise ToolError(f"skopeo copied {ref} but the engine at {docker_host} has no {target}")
    return image
