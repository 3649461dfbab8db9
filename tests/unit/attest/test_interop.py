"""Interop: bake's DSSE envelopes and keys against securesystemslib, the reference
implementation of the TUF/in-toto ecosystem.

Our envelopes must verify with securesystemslib's DEFAULT verification (keys named by
securesystemslib's own key ids, which bake uses), and its envelopes with us, or other
in-toto tooling could not check what bake signs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib import exceptions as sslib_exceptions
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from bake.attest.digest import sha256_bytes
from bake.attest.dsse import PAYLOAD_TYPE, sign_envelope, verify_envelope
from bake.attest.keys import PrivateKey, SigningKey
from bake.attest.statements import open_statement, sign_statement, statement
from bake.errors import TrustError

IMAGE = sha256_bytes(b"image")
KINDS: dict[str, Callable[[], PrivateKey]] = {
    "ed25519": Ed25519PrivateKey.generate,
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
}


def pair(kind: str = "ed25519") -> tuple[PrivateKey, SigningKey, SSlibKey]:
    """A private key, bake's signing key of it, and securesystemslib's default view of its
    public half (default key id: nothing handed over from bake)."""
    private = KINDS[kind]()
    return private, SigningKey.from_crypto(private), SSlibKey.from_crypto(private.public_key())


@pytest.mark.parametrize("kind", list(KINDS))
def test_our_envelope_passes_securesystemslibs_default_verification(kind: str) -> None:
    _private, key, sslib_key = pair(kind)
    assert key.keyid == sslib_key.keyid  # the same name for the same key
    env = sign_statement(statement([("disk", IMAGE)], "t", {"a": "ü"}), key)
    # from_dict rewrites the signature dicts it is given, so hand it a copy.
    sslib_env = Envelope.from_dict(copy.deepcopy(json.loads(json.dumps(env))))
    assert sslib_env.payload_type == PAYLOAD_TYPE
    assert list(sslib_env.verify([sslib_key], 1)) == [key.keyid]


def test_securesystemslib_rejects_our_tampered_envelope() -> None:
    _private, key, sslib_key = pair()
    sslib_env = Envelope.from_dict(copy.deepcopy(sign_envelope(b"hello", key)))
    sslib_env.payload = b"HELLO"
    with pytest.raises(sslib_exceptions.VerificationError):
        sslib_env.verify([sslib_key], 1)


@pytest.mark.parametrize("kind", list(KINDS))
def test_securesystemslib_envelope_verifies_with_us(kind: str) -> None:
    private, key, _sslib_key = pair(kind)
    payload = json.dumps(statement([("disk", IMAGE)], "t", {})).encode()
    sslib_env = Envelope(payload, PAYLOAD_TYPE, {})
    sslib_env.sign(CryptoSigner(private))
    env = json.loads(json.dumps(sslib_env.to_dict()))
    assert env["signatures"][0]["keyid"] == key.keyid
    assert verify_envelope(env, [key.public]) == payload
    assert open_statement(env, [key.public], expect_subject_digest=IMAGE)["predicateType"] == "t"


def test_a_keyid_is_only_a_hint() -> None:
    private, key, _ = pair()
    named_otherwise = CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), keyid="ci-key-1"))
    sslib_env = Envelope(b"x", PAYLOAD_TYPE, {})
    sslib_env.sign(named_otherwise)
    assert verify_envelope(sslib_env.to_dict(), [key.public]) == b"x"


def test_securesystemslib_envelope_by_stranger_is_rejected() -> None:
    stranger, _, _ = pair()
    sslib_env = Envelope(b"x", PAYLOAD_TYPE, {})
    sslib_env.sign(CryptoSigner(stranger))
    with pytest.raises(TrustError, match="no valid signature"):
        verify_envelope(sslib_env.to_dict(), [SigningKey.generate().public])
