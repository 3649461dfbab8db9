"""Registry commands: keygen, publish, promote, rollback, revoke, refresh, ls, history,
outdated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bake.app import registry as reg
from bake.app.registry import Changed
from bake.textsafe import one_line
from bake.ui.options import JsonOpt, KeyOpt, RegistryOpt, SignWithOpt, TrustOpt, access, handled, session
from bake.ui.output import line, print_json, warn


@handled
def keygen(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Key path prefix: writes PREFIX.key and PREFIX.pub.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key pair.")] = False,
    kind: Annotated[str, typer.Option("--type", help="ed25519 (default) or ecdsa-p256.")] = "ed25519",
    as_json: JsonOpt = False,
) -> None:
    """Write a key pair (private key mode 0600; passphrase from BAKE_KEY_PASSPHRASE)."""
    pair = reg.keygen(session(), out, force=force, kind=kind)
    if as_json:
        print_json(pair.to_json())
    else:
        line(f"wrote {pair.private} (0600) and {pair.public}; keyid {pair.keyid[:16]}")


@handled
def publish(
    record: Annotated[Path, typer.Argument(help="Build record written by `bake build`.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a verified bake: image by digest, signed attestations, registry entry."""
    (res,) = reg.publish(session(), [record], access(registry, trust, key))
    if as_json:
        print_json({"ok": True, **res.to_json()})
    else:
        state = "published" if res.created else "already published"
        line(f"{state} {res.name}@{res.version}  {res.ref or res.digest}")


def _show_change(change: Changed, as_json: bool) -> None:
    if as_json:
        print_json(change.to_json())
        return
    for s in change.summary:
        line(s)
    warn(change.warnings)


@handled
def promote(
    spec: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME@CHANNEL) to promote.")],
    channel: Annotated[str, typer.Argument(help="Channel to point at it, e.g. stable.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    sign_with: SignWithOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point a channel at a version (history is kept for rollback)."""
    _show_change(reg.promote(session(), access(registry, trust, key, sign_with), spec, channel), as_json)


@handled
def rollback(
    name: Annotated[str, typer.Argument(help="Image name.")],
    channel: Annotated[str, typer.Argument(help="Channel to move back.")],
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect",
            help="The head you saw (NAME@CHANNEL's version): roll back only from it; a retry after "
            "that rollback changes nothing.",
        ),
    ] = None,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    sign_with: SignWithOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a channel back to its previous known-good version (safe to retry with --expect)."""
    change = reg.rollback(session(), access(registry, trust, key, sign_with), name, channel, expect)
    _show_change(change, as_json)


@handled
def revoke(
    spec: Annotated[str, typer.Argument(help="NAME@VERSION (a build, or every build of a version).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown to deployers).")],
    cascade: Annotated[bool, typer.Option("--cascade", help="Also revoke images built on it.")] = False,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    sign_with: SignWithOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a version: resolve refuses it from now on."""
    change = reg.revoke(session(), access(registry, trust, key, sign_with), spec, reason, cascade=cascade)
    _show_change(change, as_json)


@handled
def refresh(
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign new timestamp and snapshot versions (and online roles close to expiry): run it from CI
    well within the timestamp's lifetime, so clients never see the registry frozen."""
    done = reg.refresh(session(), access(registry, trust, key))
    if as_json:
        print_json(done.to_json())
    else:
        line(f"snapshot version {done.serial}, timestamp expires {done.expires or '(not read back)'}")
        warn(done.warnings)


@handled
def list_images(registry: RegistryOpt = None, trust: TrustOpt = None, as_json: JsonOpt = False) -> None:
    """List images, their latest versions and channels."""
    listing = reg.list_images(session(), access(registry, trust))
    if as_json:
        print_json(listing.to_json())
        return
    for r in listing.images:
        chans = ", ".join(f"{c}→{v}" for c, v in r.channels.items()) or "-"
        latest = r.versions[-1] if r.versions else "-"
        line(f"{r.name:<20} {len(r.versions)} builds  latest {latest}  {chans}")


@handled
def history(
    name: Annotated[str, typer.Argument(help="Image name.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Versions, channel moves and revocations of one image."""
    hist = reg.history(session(), access(registry, trust), name)
    if as_json:
        print_json(hist.to_json())
        return
    for v in hist.versions:
        flag = f"  REVOKED: {one_line(str(v['revoked']))}" if v["revoked"] else ""
        line(f"{v['created']}  {name}@{v['version']}  key {str(v['bake_key'])[7:19]}{flag}")
    for c, entries in hist.channels.items():
        for e in entries:
            line(f"{e['at']}  {c}: {e['action']} → {e['version']}")


@handled
def outdated(registry: RegistryOpt = None, trust: TrustOpt = None, as_json: JsonOpt = False) -> None:
    """Channel heads built on a parent that has a newer version since (exit 1 if any)."""
    found = reg.outdated(session(), access(registry, trust))
    if as_json:
        print_json({"ok": not found, "outdated": [f.to_json() for f in found]})
    else:
        for f in found:
            line(f"{f.name}@{f.channel} ({f.version}) is built on {f.parent}; newer: {f.newer}")
        if not found:
            line("every channel head is built on its parent's newest version")
    if found:
        raise typer.Exit(1)
