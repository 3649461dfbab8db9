"""Keys from flags, environment or the project config: who signs, whom we trust.

The signing key's passphrase comes only from an environment variable (BAKE_KEY_PASSPHRASE
by default), never from a flag, so it cannot land in shell history or a CI log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bake.attest.keys import PublicKey, SigningKey, load_public_key, load_signing_key
from bake.errors import BakeError

PASSPHRASE_ENV = "BAKE_KEY_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret


def passphrase(environ: Mapping[str, str] | None = None, var: str = PASSPHRASE_ENV) -> bytes | None:
    env = os.environ if environ is None else environ
    value = env.get(var)
    return value.encode() if value else None


def signing_key(path: str | None, environ: Mapping[str, str] | None = None) -> SigningKey:
    if not path:
        raise BakeError(
            "no signing key",
            "pass --key KEY (made by `bake keygen`), set BAKE_SIGNING_KEY, or `signing_key` in bake.toml",
        )
    return load_signing_key(Path(path), passphrase(environ))


def trusted_keys(paths: Sequence[str], signer: SigningKey | None = None) -> list[PublicKey]:
    keys = [load_public_key(Path(p)) for p in paths]
    if signer is not None and all(k.keyid != signer.keyid for k in keys):
        keys.append(signer.public)
    if not keys:
        raise BakeError(
            "no trusted key",
            "pass --trust KEY.pub (the publisher's public key), set BAKE_TRUST, or `trust` in bake.toml",
        )
    return keys


def registry_url(flag: str | None, configured: str | None) -> str:
    url = flag or configured
    if not url:
        raise BakeError(
            "no registry given",
            "pass --registry dir:PATH or oci://HOST:PORT/PREFIX, set BAKE_REGISTRY, "
            "or `registry` in bake.toml",
        )
    return url
