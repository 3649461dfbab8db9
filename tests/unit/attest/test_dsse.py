"""bake.attest.dsse: DSSE envelopes."""

from __future__ import annotations

import base64
import json

import pytest

from bake.attest.digest import sha256_bytes
from bake.attest.dsse import PAYLOAD_TYPE, pae, sign_envelope, verify_envelope
from bake.attest.keys import (
    SigningKey,
)
from bake.errors import TrustError

IMAGE = sha256_bytes(b"image")
OTHER = sha256_bytes(b"other")


def _b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode()


# --- DSSE ------------------------------------------------------------------------------


def test_pae_spec_vector() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("tÿpe", b"") == "DSSEv1 5 tÿpe 0 ".encode()


def test_envelope_round_trip(key: SigningKey) -> None:
    env = sign_envelope(b'{"hello":"world"}', key)
    assert env["payloadType"] == PAYLOAD_TYPE
    assert env["payload"] == _b64(b'{"hello":"world"}')
    sigs = env["signatures"]
    assert isinstance(sigs, list)
    assert sigs[0]["keyid"] == key.keyid
    assert key.public.verify(base64.b64decode(sigs[0]["sig"]), pae(PAYLOAD_TYPE, b'{"hello":"world"}'))
    assert verify_envelope(json.loads(json.dumps(env)), [key.public]) == b'{"hello":"world"}'


def test_envelope_custom_payload_type(key: SigningKey) -> None:
    env = sign_envelope(b"x", key, payload_type="text/plain")
    assert verify_envelope(env, [key.public], payload_type="text/plain") == b"x"
    with pytest.raises(TrustError, match="payloadType is 'text/plain'"):
        verify_envelope(env, [key.public])


def test_tampered_payload_rejected(key: SigningKey) -> None:
    env = sign_envelope(b"good", key)
    env["payload"] = _b64(b"evil")
    with pytest.raises(TrustError, match="no valid signature by a trusted key") as e:
        verify_envelope(env, [key.public])
    assert f"claiming trusted key {key.keyid} does not verify" in e.value.message
    assert e.value.hint is not None
    assert "altered" in e.value.hint


def test_tampered_payload_type_rejected(key: SigningKey) -> None:
    env = sign_envelope(b"good", key, payload_type="a")
    env["payloadType"] = "b"
    with pytest.raises(TrustError, match="no valid signature"):
        verify_envelope(env, [key.public], payload_type="b")


def test_tampered_signature_rejected(key: SigningKey) -> None:
    env = sign_envelope(b"good", key)
    sigs = env["signatures"]
    assert isinstance(sigs, list)
    raw = bytearray(base64.b64decode(sigs[0]["sig"]))
    raw[0] ^= 1
    sigs[0]["sig"] = _b64(bytes(raw))
    with pytest.raises(TrustError, match="does not verify"):
        verify_envelope(env, [key.public])


def test_untrusted_key_rejected_and_keyids_listed(key: SigningKey, stranger: SigningKey) -> None:
    env = sign_envelope(b"good", stranger)
    with pytest.raises(TrustError) as e:
        verify_envelope(env, [key.public])
    assert f"signed by [{stranger.keyid}]" in e.value.message
    assert f"trusted [{key.keyid}]" in e.value.message


def test_no_trusted_keys(key: SigningKey) -> None:
    with pytest.raises(TrustError, match=r"trusted \[none\]"):
        verify_envelope(sign_envelope(b"x", key), [])


def test_any_trusted_signature_suffices(key: SigningKey, stranger: SigningKey) -> None:
    env = sign_envelope(b"x", key)
    other = sign_envelope(b"x", stranger)
    ours, theirs = env["signatures"], other["signatures"]
    assert isinstance(ours, list)
    assert isinstance(theirs, list)
    env["signatures"] = theirs + ours
    assert verify_envelope(env, [key.public]) == b"x"
    assert verify_envelope(env, [stranger.public]) == b"x"


def test_keyid_is_only_a_hint(key: SigningKey, stranger: SigningKey) -> None:
    env = sign_envelope(b"x", key)
    sigs = env["signatures"]
    assert isinstance(sigs, list)
    sigs[0]["keyid"] = stranger.keyid
    assert verify_envelope(env, [stranger.public, key.public]) == b"x"
    del sigs[0]["keyid"]
    assert verify_envelope(env, [key.public]) == b"x"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"payloadType": None}, "payloadType is missing"),
        ({"payload": None}, "payload is missing"),
        ({"payload": "!!notbase64!!"}, "payload is not valid base64"),
        ({"signatures": []}, "signatures must be a non-empty list"),
        ({"signatures": "sig"}, "signatures must be a non-empty list"),
        ({"signatures": ["sig"]}, r"signatures\[0\] is not an object"),
        ({"signatures": [{"keyid": 1, "sig": "AA=="}]}, r"signatures\[0\]\.keyid"),
        ({"signatures": [{"keyid": "k"}]}, r"signatures\[0\]\.sig is missing"),
        ({"signatures": [{"sig": "%%%"}]}, r"signatures\[0\]\.sig is not valid base64"),
    ],
)
def test_malformed_envelope(key: SigningKey, change: dict[str, object], message: str) -> None:
    env = {**sign_envelope(b"x", key), **change}
    with pytest.raises(TrustError, match=f"malformed envelope: {message}"):
        verify_envelope(env, [key.public])


def test_open_envelope_names_the_key_that_verified() -> None:
    from bake.attest.dsse import open_envelope

    signer, other = SigningKey.generate(), SigningKey.generate()
    env = sign_envelope(b"x", signer)
    payload, key = open_envelope(env, [other.public, signer.public])
    assert payload == b"x" and key.keyid == signer.keyid
