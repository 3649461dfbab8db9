"""Keys from flags, environment or the project config: who signs, whom we trust.

The signing key's passphrase comes only from an environment variable (BAKE_KEY_PASSPHRASE
by default), never from a flag, so it cannot land in shell history or a CI log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bake.attest.keys import SigningKey, load_signing_key
from bake.errors import BakeError
from bake.registry.roles import Signers

PASSPHRASE_ENV = "BAKE_KEY_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret


def passphrase(environ: Mapping[str, str] | None = None, var: str = PASSPHRASE_ENV) -> bytes | None:
    env = os.environ if environ is None else environ
    value = env.get(var)
    return value.encode() if value else None


def new_key_passphrase(environ: Mapping[str, str] | None = None, var: str = PASSPHRASE_ENV) -> bytes | None:
    """The passphrase for a new private key. Set but empty is refused: that is what a CI
    secret that is missing looks like, and it would silently give an unencrypted key."""
    env = os.environ if environ is None else environ
    if var in env and not env[var]:
        raise BakeError(
            f"{var} is set but empty: refusing to write the private key unencrypted",
            f"set {var} to the passphrase (is a CI secret missing?), or unset it for an unencrypted key",
            exit_code=2,
        )
    return passphrase(env, var)


def signing_key(path: str | None, environ: Mapping[str, str] | None = None) -> SigningKey:
    if not path:
        raise BakeError(
            "no signing key",
            "pass --key KEY (made by `bake keygen`), set BAKE_SIGNING_KEY, or `signing_key` in bake.toml",
        )
    return load_signing_key(Path(path), passphrase(environ))


def trust_anchors(paths: Sequence[str]) -> tuple[Path, ...]:
    """Where trust starts: root.json files, or root public keys (.pub) as a shorthand."""
    anchors = tuple(Path(p) for p in paths)
    if not anchors:
        raise BakeError(
            "no trusted root",
            "pass --trust root.json (the registry's root metadata) or --trust ROOT.pub (its root "
            "public key), set BAKE_TRUST, or `trust` in bake.toml",
        )
    return anchors


def signers(online: str | None, offline: Sequence[str], environ: Mapping[str, str] | None = None) -> Signers:
    """The online key and any offline ones given with --sign-with (same passphrase variable)."""
    return Signers(signing_key(online, environ), tuple(signing_key(p, environ) for p in offline))


def registry_url(flag: str | None, configured: str | None) -> str:
    url = flag or configured
    if not url:
        raise BakeError(
            "no registry given",
            "pass --registry dir:PATH or oci://HOST:PORT/PREFIX, set BAKE_REGISTRY, "
            "or `registry` in bake.toml",
        )
    return url
