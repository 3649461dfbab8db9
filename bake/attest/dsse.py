"""DSSE envelopes: how a payload is signed so that its type is signed too.

The format in-toto, cosign and SLSA tooling read, made and checked with securesystemslib's
`Envelope` and keys. Key ids are securesystemslib's, so that library's own default
verification (which matches signatures to keys by id) accepts our envelopes. Here a
``keyid`` is still treated as the unauthenticated hint DSSE says it is: verification tries
every trusted key, and malformed envelopes get a message saying what is wrong.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence

from securesystemslib.dsse import Envelope

from bake.attest.keys import PublicKey, SigningKey
from bake.errors import TrustError

PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, lengths in ASCII decimal bytes.
    """
    return Envelope(payload, payload_type, {}).pae()


def sign_envelope(
    payload: bytes, key: SigningKey, payload_type: str = PAYLOAD_TYPE, *more: SigningKey
) -> dict[str, object]:
    """Sign *payload* (with one key or more) and wrap it in a DSSE envelope (a JSON-ready dict)."""
    envelope = Envelope(payload, payload_type, {})
    for signer in (key, *more):
        envelope.sign(signer.signer)
    doc: dict[str, object] = envelope.to_dict()
    return doc


def verify_envelope(
    envelope: Mapping[str, object],
    trusted: Sequence[PublicKey],
    payload_type: str = PAYLOAD_TYPE,
) -> bytes:
    """Return the payload of *envelope* if a trusted key signed it; raise TrustError if not.

    A signature's ``keyid`` is an unauthenticated hint (DSSE): keys with that id are tried
    first, then every other trusted key, so envelopes from signers that name keys
    differently still verify.
    """
    return open_envelope(envelope, trusted, payload_type)[0]


def open_envelope(
    envelope: Mapping[str, object],
    trusted: Sequence[PublicKey],
    payload_type: str = PAYLOAD_TYPE,
) -> tuple[bytes, PublicKey]:
    """:func:`verify_envelope`, and the trusted key whose signature verified."""
    got_type = envelope.get("payloadType")
    if not isinstance(got_type, str):
        raise TrustError("malformed envelope: payloadType is missing or not a string")
    payload = _b64decode(envelope.get("payload"), "payload")
    raw_sigs = envelope.get("signatures")
    if not isinstance(raw_sigs, list) or not raw_sigs:
        raise TrustError("malformed envelope: signatures must be a non-empty list")
    if got_type != payload_type:
        raise TrustError(
            f"envelope payloadType is {got_type!r}, expected {payload_type!r}",
            hint="this envelope holds another kind of document",
        )

    signed = pae(got_type, payload)
    trusted_ids = {k.keyid for k in trusted}
    present: list[str] = []
    for i, raw in enumerate(raw_sigs):
        if not isinstance(raw, Mapping):
            raise TrustError(f"malformed envelope: signatures[{i}] is not an object")
        keyid = raw.get("keyid", "")
        if not isinstance(keyid, str):
            raise TrustError(f"malformed envelope: signatures[{i}].keyid is not a string")
        sig = _b64decode(raw.get("sig"), f"signatures[{i}].sig")
        present.append(keyid or "(no keyid)")
        candidates = sorted(trusted, key=lambda k: k.keyid != keyid)
        for key in candidates:
            if key.verify(sig, signed):
                return payload, key

    altered = [k for k in present if k in trusted_ids]
    if altered:
        raise TrustError(
            "no valid signature by a trusted key: the signature claiming trusted key "
            f"{', '.join(altered)} does not verify",
            hint="the envelope was altered or corrupted after it was signed",
        )
    raise TrustError(
        "no valid signature by a trusted key: "
        f"signed by [{', '.join(present)}], "
        f"trusted [{', '.join(k.keyid for k in trusted) or 'none'}]",
        hint="trust the public key (.pub) of whoever signed it, if you do",
    )


def _b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode("ascii")


def _b64decode(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise TrustError(f"malformed envelope: {what} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise TrustError(f"malformed envelope: {what} is not valid base64 ({e})") from e
