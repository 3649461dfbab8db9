"""Registry and deployer commands: keygen, publish, promote, rollback, revoke, ls,
history, resolve, pin, lock check, refresh. Registered on the app from bake.cli."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from bake.cli import JsonOpt, app, handled, lock_app
from bake.errors import BakeError
from bake.output import line, print_json

RegistryOpt = Annotated[
    str | None,
    typer.Option("--registry", "-r", help="dir:PATH or oci://HOST:PORT/PREFIX (or BAKE_REGISTRY)."),
]
TrustOpt = Annotated[
    list[str] | None, typer.Option("--trust", help="Trusted public key(s) (.pub); or BAKE_TRUST.")
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--key", help="Signing key (or BAKE_SIGNING_KEY); passphrase: BAKE_KEY_PASSPHRASE."),
]


def _now() -> datetime:
    return datetime.now(UTC)


def _settings() -> Any:
    from bake.project import find_root, load_settings

    return load_settings(find_root())


def reader(registry: str | None, trust: list[str] | None) -> tuple[Any, Any, list[Any]]:
    """(registry, snapshot, trusted keys) after verifying signature, freshness, replay."""
    from bake.resolving import reader as read

    return read(registry, trust)


def writer(registry: str | None, trust: list[str] | None, key: str | None) -> tuple[Any, Any, list[Any]]:
    """(registry, signing key, trusted keys) for commands that change the registry."""
    from bake.registry.backend import open_registry
    from bake.trust import registry_url, signing_key, trusted_keys

    settings = _settings()
    reg = open_registry(registry_url(registry, settings.registry))
    signer = signing_key(key or settings.signing_key)
    trusted = trusted_keys(trust or list(settings.trust), signer)
    return reg, signer, trusted


def ensure_initialized(reg: Any, signer: Any) -> None:
    from bake.registry import client

    if reg.read_index_envelope() is None:
        client.init(reg, signer, now=_now(), state=client.FreshnessState.default())


@app.command()
@handled
def keygen(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Key path prefix: writes PREFIX.key and PREFIX.pub.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key pair.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write an ed25519 key pair (private key mode 0600; passphrase from BAKE_KEY_PASSPHRASE)."""
    from bake.attest import load_public_key, write_keypair
    from bake.trust import passphrase

    out.parent.mkdir(parents=True, exist_ok=True)
    private, public = write_keypair(out, passphrase(), force=force)
    keyid = load_public_key(public).keyid
    if as_json:
        print_json({"ok": True, "private": str(private), "public": str(public), "keyid": keyid})
    else:
        line(f"wrote {private} (0600) and {public}; keyid {keyid[:16]}")


def vm_copier(url: str) -> Any:
    """How a VM record's disk, kernel and initrd get into the registry."""
    from bake.publish import image_tag, is_vm, vm_parts
    from bake.registry import disks

    def copy(record: Any) -> tuple[str | None, str]:
        if not is_vm(record):
            raise BakeError(f"{record.name}: not a VM bake (artifact type {record.artifact.get('type')!r})")
        files = [disks.DiskFile(*part) for part in vm_parts(record)]
        digest = str(record.artifact["digest"])
        if url.startswith("oci://"):
            repo = f"{url.removeprefix('oci://').rstrip('/')}/{record.name}"
            return disks.push_to_oci(files, repo, image_tag(record)), digest
        disks.store_in_dir(Path(url.removeprefix("dir:")).resolve(), files)
        return None, digest  # the blob of that digest

    return copy


def copier(url: str, runner: Any, engine: Any) -> Any:
    """How a record's image gets into the registry: pushed by digest, or an OCI layout."""
    from bake.publish import image_tag
    from bake.registry import images

    if url.startswith("oci://"):
        hostpath = url.removeprefix("oci://").rstrip("/")

        def push(record: Any) -> tuple[str, str]:
            pushed = images.push_docker_image(
                runner,
                engine.host,
                str(record.artifact["image_id"]),
                f"{hostpath}/{record.name}",
                image_tag(record),
            )
            return pushed.ref, pushed.digest

        return push
    root = Path(url.removeprefix("dir:")).resolve()

    def export(record: Any) -> tuple[str, str]:
        import fcntl

        layout = root / "oci" / record.name
        layout.parent.mkdir(parents=True, exist_ok=True)
        # skopeo rewrites the layout's index.json in place: one writer per layout at a time
        with (layout.parent / f".{record.name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            pushed = images.export_docker_image_to_layout(
                runner, engine.host, str(record.artifact["image_id"]), layout, image_tag(record)
            )
        # stored relative to the registry root, so the folder can be copied or moved
        return f"oci-layout:oci/{record.name}@{pushed.digest}", pushed.digest

    return export


def publish_records(
    records: list[Any], registry: str | None, trust: list[str] | None, key: str | None, engine: Any = None
) -> list[Any]:
    """Publish good build records; `engine`: a Docker engine already open (else one is
    opened for container records, none for VM records)."""
    from bake import docker, process
    from bake.project import find_root, state_dir
    from bake.publish import is_vm, publish_record
    from bake.registry import client

    reg, signer, trusted = writer(registry, trust, key)
    ensure_initialized(reg, signer)
    state = state_dir(find_root(), _settings())
    results = []
    # VM bakes need no Docker engine: do not start one for them
    containers = engine is None and any(not is_vm(rec) for rec in records)
    with (
        process.terminate_as_interrupt(),
        docker.engine(process.run, state) if containers else contextlib.nullcontext(engine) as eng,
    ):
        for rec in records:
            vm = is_vm(rec)
            results.append(
                publish_record(
                    reg,
                    rec,
                    key=signer,
                    trusted=trusted,
                    copy_image=vm_copier(reg.url) if vm else copier(reg.url, process.run, eng),
                    state=state,
                    runner=process.run,
                    engine=eng,
                    now=_now(),
                    freshness=client.FreshnessState.default(),
                    collect_files=None if vm else _files_collector(process.run, eng, rec),
                )
            )
    return results


def _files_collector(runner: Any, engine: Any, record: Any) -> Any:
    try:
        from bake import filemanifest
    except ImportError:  # pragma: no cover - drift support not installed
        return None

    def collect(image: str, volatile: list[str]) -> dict[str, object]:
        entries = filemanifest.collect_image_manifest(runner, engine, image, volatile)
        return filemanifest.manifest_predicate(entries, sorted(filemanifest.volatile_set(volatile)))

    return collect


@app.command()
@handled
def publish(
    record: Annotated[Path, typer.Argument(help="Build record written by `bake build`.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a verified bake: image by digest, signed attestations, registry entry."""
    from bake.record import load

    (res,) = publish_records([load(record)], registry, trust, key)
    if as_json:
        print_json({"ok": True, **res.to_json()})
    else:
        state = "published" if res.created else "already published"
        line(f"{state} {res.name}@{res.version}  {res.ref or res.digest}")


@app.command()
@handled
def promote(
    spec: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME@CHANNEL) to promote.")],
    channel: Annotated[str, typer.Argument(help="Channel to point at it, e.g. stable.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point a channel at a version (history is kept for rollback)."""
    from bake.deploy import plan_promote

    _change(lambda snap: plan_promote(snap, spec, channel, at=_now()), registry, trust, key, as_json)


@app.command()
@handled
def rollback(
    name: Annotated[str, typer.Argument(help="Image name.")],
    channel: Annotated[str, typer.Argument(help="Channel to move back.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a channel back to its previous known-good version."""
    from bake.deploy import plan_rollback

    _change(lambda snap: plan_rollback(snap, name, channel, at=_now()), registry, trust, key, as_json)


@app.command()
@handled
def revoke(
    spec: Annotated[str, typer.Argument(help="NAME@VERSION (a build, or every build of a version).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown to deployers).")],
    cascade: Annotated[bool, typer.Option("--cascade", help="Also revoke images built on it.")] = False,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a version: resolve refuses it from now on."""
    from bake.deploy import plan_revoke

    _change(
        lambda snap: plan_revoke(snap, spec, reason, at=_now(), cascade_children=cascade),
        registry,
        trust,
        key,
        as_json,
    )


def _change(plan: Any, registry: str | None, trust: list[str] | None, key: str | None, as_json: bool) -> None:
    from bake.registry import client

    reg, signer, trusted = writer(registry, trust, key)
    snap, change = client.apply(reg, signer, trusted, plan, now=_now(), state=client.FreshnessState.default())
    if as_json:
        print_json({"ok": True, "serial": snap.index.serial, "changes": list(change.summary)})
    else:
        for s in change.summary:
            line(s)


@app.command()
@handled
def refresh(
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-sign the index with a new expiry (run it from CI so clients never see it frozen)."""
    from bake.registry import client

    reg, signer, trusted = writer(registry, trust, key)
    snap = client.refresh(reg, signer, trusted, now=_now(), state=client.FreshnessState.default())
    if as_json:
        print_json({"ok": True, "serial": snap.index.serial, "expires": snap.index.expires})
    else:
        line(f"index serial {snap.index.serial}, expires {snap.index.expires}")


@app.command("ls")
@handled
def list_images(registry: RegistryOpt = None, trust: TrustOpt = None, as_json: JsonOpt = False) -> None:
    """List images, their latest versions and channels."""
    _reg, snap, _trusted = reader(registry, trust)
    rows = []
    for name in snap.names():
        doc = snap.image(name)
        rows.append(
            {
                "name": name,
                "versions": sorted(doc.versions),
                "channels": {c: ch.current for c, ch in sorted(doc.channels.items())},
                "revoked": sorted(doc.revocations),
            }
        )
    if as_json:
        print_json({"ok": True, "serial": snap.index.serial, "expires": snap.index.expires, "images": rows})
        return
    for r in rows:
        chans = ", ".join(f"{c}→{v}" for c, v in r["channels"].items()) or "-"
        latest = r["versions"][-1] if r["versions"] else "-"
        line(f"{r['name']:<20} {len(r['versions'])} builds  latest {latest}  {chans}")


@app.command()
@handled
def history(
    name: Annotated[str, typer.Argument(help="Image name.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Versions, channel moves and revocations of one image."""
    _reg, snap, _trusted = reader(registry, trust)
    doc = snap.image(name)
    versions = [
        {
            "version": v,
            "created": b.created,
            "bake_key": b.bake_key,
            "parent": b.parent,
            "revoked": doc.revocations[v].reason if v in doc.revocations else None,
        }
        for v, b in sorted(doc.versions.items(), key=lambda kv: kv[1].created)
    ]
    channels = {
        c: [{"version": e.version, "at": e.at, "action": e.action} for e in ch.history]
        for c, ch in sorted(doc.channels.items())
    }
    if as_json:
        print_json({"ok": True, "name": name, "versions": versions, "channels": channels})
        return
    for v in versions:
        flag = f"  REVOKED: {v['revoked']}" if v["revoked"] else ""
        line(f"{v['created']}  {name}@{v['version']}  key {str(v['bake_key'])[7:19]}{flag}")
    for c, entries in channels.items():
        for e in entries:
            line(f"{e['at']}  {c}: {e['action']} → {e['version']}")


@app.command()
@handled
def resolve(
    spec: Annotated[str, typer.Argument(help="NAME@CHANNEL, NAME@VERSION or NAME@latest.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target.")] = "docker",
    fmt: Annotated[str, typer.Option("--format", help="text, json, env or tfvars.")] = "text",
    as_json: JsonOpt = False,
) -> None:
    """Print the image reference by digest, after checking signature, digest, revocation
    and index freshness."""
    from bake.deploy import format_resolution
    from bake.resolving import verified

    _reg, res = verified(spec, registry, trust, target)
    out = format_resolution(res, "json" if as_json else fmt)
    typer.echo(out.rstrip("\n"))


@app.command()
@handled
def fetch(
    spec: Annotated[str, typer.Argument(help="NAME@CHANNEL, NAME@VERSION or NAME@latest.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the disk, e.g. web.qcow2.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target.")] = "qemu",
    as_json: JsonOpt = False,
) -> None:
    """Download a VM image (disk, kernel, initrd) after the checks `bake resolve` makes; each
    file's bytes are checked against its signed digest before it is put in place."""
    from bake import vm
    from bake.publish import VM_ROLES
    from bake.registry import disks
    from bake.resolving import verified

    reg, res = verified(spec, registry, trust, target)
    if not res.files:
        raise BakeError(
            f"{res.name}@{res.version} ({target}) is not a file artifact: nothing to fetch",
            "containers are pulled by their ref: `bake resolve` prints it",
        )
    stem = out.name.removesuffix(".qcow2")
    dests = {
        "disk": out,
        "kernel": out.with_name(f"{stem}.vmlinuz"),
        "initrd": out.with_name(f"{stem}.initrd.img"),
    }
    got = {f.role: f for f in disks.fetch(reg.url, res.ref, res.files, dests)}
    boot = (
        f"qemu-system-x86_64 -m 1024 -nographic -kernel {dests['kernel']} -initrd {dests['initrd']} "
        f'-append "{vm.KERNEL_CMDLINE}" -drive file={out},if=virtio,format=qcow2'
    )
    if as_json:
        files = {r: {"path": str(f.path), "digest": f.digest, "size": f.size} for r, f in got.items()}
        print_json({"ok": True, **res.to_json(), "fetched": files, "boot": boot})
        return
    line(f"fetched {res.name}@{res.version} ({res.digest[:19]})")
    for role in VM_ROLES:
        if role in got:
            line(f"  {role:<7} {got[role].path}  {got[role].size} bytes, sha256 checked")
    line(f"  boot    {boot}")


@app.command()
@handled
def pin(
    spec: Annotated[str, typer.Argument(help="NAME@CHANNEL or NAME@VERSION to pin.")],
    lock: Annotated[Path, typer.Option("--lock", help="Lock file.")] = Path("bake.lock"),
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Target.")] = "docker",
    as_json: JsonOpt = False,
) -> None:
    """Resolve and record the digest in a lock file."""
    from bake.deploy import LockFile, read_lock, write_lock
    from bake.deploy import pin as do_pin
    from bake.resolving import verified

    reg, res = verified(spec, registry, trust, target)
    current = read_lock(lock) if lock.exists() else LockFile(pins=())
    write_lock(lock, do_pin(current, res, reg.url, _now()))
    if as_json:
        print_json({"ok": True, "lock": str(lock), **res.to_json()})
    else:
        line(f"pinned {res.name}@{res.version} ({target}) {res.ref or res.digest} in {lock}")


@lock_app.command("check")
@handled
def lock_check(
    lock: Annotated[Path, typer.Argument(help="Lock file.")] = Path("bake.lock"),
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report revoked and outdated pins (exit 1 when a pin is revoked or gone)."""
    from bake.deploy import check_lock, read_lock

    _reg, snap, _trusted = reader(registry, trust)
    findings = check_lock(read_lock(lock), snap)
    errors = [f for f in findings if f.severity == "error"]
    if as_json:
        print_json(
            {
                "ok": not errors,
                "findings": [
                    {"kind": f.kind, "severity": f.severity, "name": f.pin.name, "message": f.message}
                    for f in findings
                ],
            }
        )
    else:
        for f in findings:
            line(f"{f.severity:<7} {f.kind:<12} {f.message}")
        if not findings:
            line(f"{lock}: every pin is current")
    if errors:
        raise typer.Exit(1)
