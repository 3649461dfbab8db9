"""Interop: bake's DSSE envelopes against securesystemslib's, the reference implementation.

Our envelopes must verify with securesystemslib, and its envelopes with us, or other
in-toto tooling could not check what bake signs.
"""

from __future__ import annotations

import copy
import json

import pytest

from bake.attest.digest import sha256_bytes
from bake.attest.dsse import PAYLOAD_TYPE, sign_envelope, verify_envelope
from bake.attest.keys import SigningKey
from bake.attest.statements import open_statement, sign_statement, statement
from bake.errors import TrustError

sslib_dsse = pytest.importorskip("securesystemslib.dsse")
sslib_signer = pytest.importorskip("securesystemslib.signer")
sslib_exceptions = pytest.importorskip("securesystemslib.exceptions")

IMAGE = sha256_bytes(b"image")


def _sslib_key(key: SigningKey) -> object:
    """securesystemslib's view of our public key, under our keyid."""
    return sslib_signer.SSlibKey.from_crypto(key.key.public_key(), keyid=key.keyid)


def test_our_envelope_verifies_with_securesystemslib() -> None:
    key = SigningKey.generate()
    env = sign_statement(statement([("disk", IMAGE)], "t", {"a": "ü"}), key)
    # from_dict rewrites the signature dicts it is given, so hand it a copy.
    sslib_env = sslib_dsse.Envelope.from_dict(copy.deepcopy(json.loads(json.dumps(env))))
    assert sslib_env.payload_type == PAYLOAD_TYPE
    accepted = sslib_env.verify([_sslib_key(key)], 1)
    assert list(accepted) == [key.keyid]


def test_our_envelope_keyid_matches_sslib_key_dict_form() -> None:
    key = SigningKey.generate()
    raw_hex = key.key.public_key().public_bytes_raw().hex()
    sslib_key = sslib_signer.Key.from_dict(
        key.keyid, {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": raw_hex}}
    )
    env = sign_envelope(b"hello", key)
    sslib_env = sslib_dsse.Envelope.from_dict(copy.deepcopy(env))
    assert list(sslib_env.verify([sslib_key], 1)) == [key.keyid]


def test_securesystemslib_rejects_our_tampered_envelope() -> None:
    key = SigningKey.generate()
    env = sign_envelope(b"hello", key)
    sslib_env = sslib_dsse.Envelope.from_dict(copy.deepcopy(env))
    sslib_env.payload = b"HELLO"
    with pytest.raises(sslib_exceptions.VerificationError):
        sslib_env.verify([_sslib_key(key)], 1)


@pytest.mark.parametrize("same_keyid", [True, False])
def test_securesystemslib_envelope_verifies_with_us(same_keyid: bool) -> None:
    key = SigningKey.generate()
    # With same_keyid=False the signer names the key by securesystemslib's own keyid
    # scheme; the keyid is only a hint, so we must still find and check the key.
    public = _sslib_key(key) if same_keyid else None
    signer = sslib_signer.CryptoSigner(key.key, public)
    payload = json.dumps(statement([("disk", IMAGE)], "t", {})).encode()
    sslib_env = sslib_dsse.Envelope(payload, PAYLOAD_TYPE, {})
    sslib_env.sign(signer)
    env = json.loads(json.dumps(sslib_env.to_dict()))
    assert (env["signatures"][0]["keyid"] == key.keyid) is same_keyid

    assert verify_envelope(env, [key.public]) == payload
    assert open_statement(env, [key.public], expect_subject_digest=IMAGE)["predicateType"] == "t"


def test_securesystemslib_envelope_by_stranger_is_rejected() -> None:
    stranger = SigningKey.generate()
    sslib_env = sslib_dsse.Envelope(b"x", PAYLOAD_TYPE, {})
    sslib_env.sign(sslib_signer.CryptoSigner(stranger.key))
    with pytest.raises(TrustError, match="no valid signature"):
        verify_envelope(sslib_env.to_dict(), [SigningKey.generate().public])
