"""`bake keys …` (who signs what in a registry), `bake sign` and `bake pending`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bake.app import keys
from bake.app.keys import KeysResult
from bake.app.session import RegistryAccess
from bake.ui.options import JsonOpt, KeyOpt, RegistryOpt, SignWithOpt, TrustOpt, handled, session
from bake.ui.options import access as registry_access
from bake.ui.output import line, print_json


def _access(
    registry: str | None, trust: list[str] | None, key: str | None, sign_with: list[str] | None
) -> RegistryAccess:
    return registry_access(registry, trust, key, sign_with)


def _show(result: KeysResult, as_json: bool) -> None:
    if as_json:
        print_json(result.to_json())
    else:
        line(result.summary)


@handled
def init(
    root_key: Annotated[
        list[Path] | None, typer.Option("--root-key", help="A root public key (.pub); repeatable.")
    ] = None,
    threshold: Annotated[int, typer.Option("--threshold", help="Root signatures needed.")] = 1,
    require: Annotated[
        str, typer.Option("--require", help="Attestations resolve requires (comma-separated; '' for none).")
    ] = "provenance,test-result",
    timestamp_hours: Annotated[
        float, typer.Option("--timestamp-hours", help="How long a timestamp stays fresh.")
    ] = 24.0,
    registry: RegistryOpt = None,
    key: KeyOpt = None,
    sign_with: SignWithOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set up an empty registry: root keys (k of n, may stay offline; sign with them via
    --sign-with), the online key (--key), the policy. Without --root-key the online key is
    the root key too."""
    required = tuple(k for k in require.split(",") if k)
    result = keys.init(
        session(), _access(registry, None, key, sign_with), root_key or [], threshold,
        required=required, timestamp_hours=timestamp_hours,
    )  # fmt: skip
    _show(result, as_json)


@handled
def show(
    root_out: Annotated[
        Path | None, typer.Option("--root-out", help="Write the current root.json here.")
    ] = None,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Roles, their keys and thresholds, and the policy (as the TUF client verified them)."""
    shown = keys.show(session(), _access(registry, trust, key, None), root_out)
    if as_json:
        print_json(shown.to_json())
        return
    line(f"root version {shown.root_version}")
    for r in shown.roles:
        line(f"  {r.role:<20} {r.threshold} of {len(r.keyids)}: {', '.join(k[:16] for k in r.keyids)}")
    line(
        f"  policy: requires {', '.join(shown.policy.required) or 'nothing'}; "
        f"timestamp {shown.policy.timestamp_hours:g} h"
    )


@handled
def add(
    role: Annotated[str, typer.Argument(help="root or targets.")],
    public_key: Annotated[list[Path], typer.Argument(help="Public key(s) (.pub) to add.")],
    threshold: Annotated[int | None, typer.Option("--threshold", help="New threshold.")] = None,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    sign_with: SignWithOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add keys to root or targets (a new root version, signed by old and new root keys)."""
    _show(
        keys.change(
            session(), _access(registry, trust, key, sign_with), role, add=public_key, threshold=threshold
        ),
        as_json,
    )


@handled
def revoke(
    role: Annotated[str, typer.Argument(help="root or targets.")],
    keyid: Annotated[list[str], typer.Argument(help="Key id(s) to remove.")],
    threshold: Annotated[int | None, typer.Option("--threshold", help="New threshold.")] = None,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    sign_with: SignWithOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke keys of root or targets: from the new root version on they sign nothing."""
    _show(
        keys.change(
            session(), _access(registry, trust, key, sign_with), role, remove=keyid, threshold=threshold
        ),
        as_json,
    )


@handled
def rotate(
    role: Annotated[str, typer.Argument(help="root or targets.")],
    add_key: Annotated[list[Path], typer.Option("--add", help="New public key (.pub); repeatable.")],
    remove_key: Annotated[list[str], typer.Option("--remove", help="Key id to retire; repeatable.")],
    threshold: Annotated[int | None, typer.Option("--threshold", help="New threshold.")] = None,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    sign_with: SignWithOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace keys in one new root version (sign with old and new root keys)."""
    result = keys.change(
        session(),
        _access(registry, trust, key, sign_with),
        role,
        add=add_key,
        remove=remove_key,
        threshold=threshold,
    )
    _show(result, as_json)


@handled
def protect(
    channel: Annotated[str, typer.Argument(help="Channel, e.g. prod.")],
    public_key: Annotated[
        list[Path], typer.Option("--key-of", help="A public key of the channel; repeatable.")
    ],
    threshold: Annotated[int, typer.Option("--threshold", help="Signatures a move needs.")] = 1,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    sign_with: SignWithOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Protect a channel: moving it needs THRESHOLD of its own keys. Pass the targets keys,
    and THRESHOLD of the channel's keys (they sign its first, empty version), with
    --sign-with; missing signatures leave it pending (bake sign)."""
    _show(
        keys.protect(session(), _access(registry, trust, key, sign_with), channel, public_key, threshold),
        as_json,
    )


@handled
def sign(
    role: Annotated[str, typer.Argument(help="The role of the pending change: root, targets, channel-C.")],
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    sign_with: SignWithOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add signatures to a pending change; it is published once its threshold is met."""
    _show(keys.sign(session(), _access(registry, trust, key, sign_with), role), as_json)


@handled
def pending(
    drop: Annotated[
        str | None, typer.Option("--drop", help="Withdraw the pending change of this role.")
    ] = None,
    registry: RegistryOpt = None,
    trust: TrustOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Changes waiting for more signatures."""
    s, where = session(), _access(registry, trust, key, None)
    if drop:
        keys.drop(s, where, drop)
    found = keys.pending(s, where)
    if as_json:
        print_json({"ok": True, "pending": [p.to_json() for p in found]})
        return
    for p in found:
        line(
            f"{p.role} v{p.version}: {len(p.signed_by)} of {p.threshold} signatures "
            f"({', '.join(k[:16] for k in p.signed_by)})"
        )
    if not found:
        line("nothing is pending")
