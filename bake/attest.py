"""Signing keys, DSSE envelopes and in-toto statements: how bake vouches for an image.

An image is trusted because a statement naming its digest is signed by a key the user
trusts. Statements are in-toto v1, wrapped in DSSE envelopes (the format cosign, in-toto
and SLSA tooling read), signed with ed25519. Everything here is pure: keys come in as
objects or files, envelopes go out as plain dicts ready for JSON.

A key's id is the hex sha256 of its raw 32-byte public key, so it can be recomputed
from the public key alone and does not depend on any encoding of it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from bake.digest import canonical_json, split_digest
from bake.errors import BakeError, TrustError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"

KEYGEN_HINT = "create a key pair with `bake keygen`"

# --- keys ------------------------------------------------------------------------------


def keyid_of(public: Ed25519PublicKey) -> str:
    """The key id bake uses: hex sha256 of the raw 32-byte public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """An ed25519 public key and its id. Equal keys have equal ids."""

    keyid: str
    key: Ed25519PublicKey = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.keyid != keyid_of(self.key):
            raise ValueError(f"keyid {self.keyid} does not match the key")

    @classmethod
    def from_crypto(cls, key: Ed25519PublicKey) -> PublicKey:
        return cls(keyid_of(key), key)

    def verify(self, sig: bytes, data: bytes) -> bool:
        """True when *sig* is this key's signature over *data*."""
        try:
            self.key.verify(sig, data)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """An ed25519 private key and the id of its public half."""

    keyid: str
    key: Ed25519PrivateKey = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.keyid != keyid_of(self.key.public_key()):
            raise ValueError(f"keyid {self.keyid} does not match the key")

    @classmethod
    def from_crypto(cls, key: Ed25519PrivateKey) -> SigningKey:
        return cls(keyid_of(key.public_key()), key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_crypto(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.keyid, self.key.public_key())


def generate_keypair(passphrase: bytes | None) -> tuple[bytes, bytes]:
    """Return a new (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM) pair.

    The private PEM is encrypted when *passphrase* is given.
    """
    if passphrase is not None and not passphrase:
        raise BakeError(
            "the passphrase is empty",
            hint="give a non-empty passphrase, or none for an unencrypted key",
        )
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def key_paths(prefix: Path) -> tuple[Path, Path]:
    """``PREFIX.key`` and ``PREFIX.pub`` (appended, so dots in *prefix* are kept)."""
    return prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")


def write_keypair(prefix: Path, passphrase: bytes | None, force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair to ``PREFIX.key`` (mode 0600) and ``PREFIX.pub``.

    Refuses to overwrite either file unless *force*. Each file is written to a temporary
    file in the same folder (created 0600, exclusively) and then moved into place, so no
    reader ever sees a partial key and the private key is never readable by others.
    """
    key_path, pub_path = key_paths(prefix)
    if not force:
        existing = [p for p in (key_path, pub_path) if p.exists() or p.is_symlink()]
        if existing:
            raise BakeError(
                f"refusing to overwrite {', '.join(map(str, existing))}",
                hint="choose another prefix, or pass --force to replace the key pair",
            )
    private_pem, public_pem = generate_keypair(passphrase)
    _write_atomic(key_path, private_pem, 0o600, replace=force)
    _write_atomic(pub_path, public_pem, 0o644, replace=force)
    return key_path, pub_path


def _write_atomic(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    folder = path.parent
    tmp = folder / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        # Created with its final mode (less the umask): a private key is never readable
        # by others, not even between open() and a later chmod().
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            tmp.replace(path)
        else:
            # link() fails if *path* appeared meanwhile, where replace() would clobber it.
            path.hardlink_to(tmp)
        _fsync_dir(folder)
    except FileExistsError as e:
        raise BakeError(f"refusing to overwrite {path}", hint="pass --force to replace the key pair") from e
    except OSError as e:
        raise BakeError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_signing_key(path: Path, passphrase: bytes | None) -> SigningKey:
    """Load an ed25519 private key from a PEM file, decrypting it with *passphrase*."""
    data = _read_key_file(path)
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise BakeError(
            f"{path} holds a public key, not a private key",
            hint="sign with the .key file of the pair",
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as e:
        # cryptography signals a missing or superfluous password with TypeError.
        if passphrase:
            raise BakeError(
                f"{path} is not encrypted, but a passphrase was given",
                hint="drop the passphrase",
            ) from e
        raise BakeError(
            f"{path} is encrypted and no passphrase was given",
            hint="give the key's passphrase",
        ) from e
    except ValueError as e:
        if passphrase and b"ENCRYPTED PRIVATE KEY-----" in data:
            raise BakeError(
                f"wrong passphrase for {path}", hint="give the passphrase the key was made with"
            ) from e
        raise BakeError(f"{path} is not a PEM private key ({e})", hint=KEYGEN_HINT) from e
    except UnsupportedAlgorithm as e:
        raise BakeError(f"{path} is not a usable private key ({e})", hint=KEYGEN_HINT) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise BakeError(
            f"{path} holds a key of type {_key_kind(key)}; bake signs with ed25519 only",
            hint=KEYGEN_HINT,
        )
    return SigningKey.from_crypto(key)


def load_public_key(path: Path) -> PublicKey:
    """Load an ed25519 public key from a PEM (SubjectPublicKeyInfo) file."""
    data = _read_key_file(path)
    if b"PRIVATE KEY-----" in data:
        raise BakeError(
            f"{path} holds a private key; give the public key (.pub) to trust",
            hint="trust the .pub file of the pair",
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise BakeError(f"{path} is not a PEM public key ({e})", hint=KEYGEN_HINT) from e
    except UnsupportedAlgorithm as e:
        raise BakeError(f"{path} is not a usable public key ({e})", hint=KEYGEN_HINT) from e
    if not isinstance(key, Ed25519PublicKey):
        raise BakeError(
            f"{path} holds a key of type {_key_kind(key)}; bake verifies ed25519 only",
            hint=KEYGEN_HINT,
        )
    return PublicKey.from_crypto(key)


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BakeError(f"cannot read key file {path}: {e.strerror or e}", hint=KEYGEN_HINT) from e


def _key_kind(key: object) -> str:
    kinds: list[tuple[str, tuple[type, ...]]] = [
        ("RSA", (rsa.RSAPrivateKey, rsa.RSAPublicKey)),
        ("ECDSA", (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)),
        ("DSA", (dsa.DSAPrivateKey, dsa.DSAPublicKey)),
        ("Ed448", (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)),
    ]
    return next((name for name, types in kinds if isinstance(key, types)), type(key).__name__)


# --- DSSE ------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, lengths in ASCII decimal bytes.
    """
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def sign_envelope(payload: bytes, key: SigningKey, payload_type: str = PAYLOAD_TYPE) -> dict[str, object]:
    """Sign *payload* and wrap it in a DSSE envelope (a JSON-ready dict)."""
    sig = key.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": _b64(payload),
        "signatures": [{"keyid": key.keyid, "sig": _b64(sig)}],
    }


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
        if any(k.verify(sig, signed) for k in candidates):
            return payload

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


# --- in-toto statements ------------------------------------------------------------------


def statement(
    subjects: Sequence[tuple[str, str]],
    predicate_type: str,
    predicate: Mapping[str, object],
) -> dict[str, object]:
    """An in-toto Statement v1 about *subjects*, each ``(name, "sha256:<hex>")``."""
    if not subjects:
        raise BakeError("an attestation needs at least one subject")
    return {
        "_type": STATEMENT_V1,
        "subject": [{"name": name, "digest": _digest_set(d)} for name, d in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def sign_statement(stmt: Mapping[str, object], key: SigningKey) -> dict[str, object]:
    """Sign *stmt* (as canonical JSON) into a DSSE envelope."""
    return sign_envelope(canonical_json(stmt), key)


def open_statement(
    envelope: Mapping[str, object],
    trusted: Sequence[PublicKey],
    expect_subject_digest: str | None = None,
) -> dict[str, object]:
    """Verify *envelope*, parse its in-toto statement and check what it is about.

    With *expect_subject_digest*, one of the statement's subjects must have that digest.
    """
    payload = verify_envelope(envelope, trusted)
    try:
        stmt = json.loads(
            payload,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constants,
        )
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise TrustError(f"signed payload is not valid JSON: {e}") from e
    if not isinstance(stmt, dict):
        raise TrustError("signed payload is not a JSON object")
    if stmt.get("_type") != STATEMENT_V1:
        raise TrustError(f"signed payload is not an in-toto Statement v1 (_type {stmt.get('_type')!r})")
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise TrustError("statement has no subject")
    if not isinstance(stmt.get("predicateType"), str):
        raise TrustError("statement has no predicateType")
    if expect_subject_digest is not None:
        _, want = split_digest(expect_subject_digest)
        found = [
            s["digest"]["sha256"]
            for s in subjects
            if isinstance(s, dict)
            and isinstance(s.get("digest"), dict)
            and isinstance(s["digest"].get("sha256"), str)
        ]
        if want not in found:
            raise TrustError(
                f"statement is not about {expect_subject_digest}: "
                f"its subjects are [{', '.join('sha256:' + h for h in found) or 'none'}]",
                hint="this attestation belongs to another image",
            )
    return stmt


def _digest_set(d: str) -> dict[str, str]:
    algo, hexdigest = split_digest(d)
    return {algo: hexdigest}


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Parsers disagree on which duplicate wins; a signed document must mean one thing.
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


# --- predicates --------------------------------------------------------------------------


def slsa_provenance(
    *,
    build_type: str,
    external_parameters: Mapping[str, object],
    resolved_dependencies: Sequence[tuple[str, str]],
    builder_id: str,
    invocation_id: str,
    started: str,
    finished: str,
    packer_version: str,
) -> dict[str, object]:
    """A SLSA provenance v1 predicate (``SLSA_PROVENANCE``) for one bake build.

    *resolved_dependencies* are ``(uri, "sha256:<hex>")`` pairs; *started* and *finished*
    are RFC 3339 timestamps.
    """
    return {
        "buildDefinition": {
            "buildType": build_type,
            "externalParameters": dict(external_parameters),
            "internalParameters": {"packer_version": packer_version},
            "resolvedDependencies": [
                {"uri": uri, "digest": _digest_set(d)} for uri, d in resolved_dependencies
            ],
        },
        "runDetails": {
            "builder": {"id": builder_id},
            "metadata": {
                "invocationId": invocation_id,
                "startedOn": started,
                "finishedOn": finished,
            },
        },
    }


TEST_RESULTS = ("PASSED", "FAILED")


def test_result(
    *,
    result: str,
    passed: Sequence[str],
    failed: Sequence[str],
    configuration: Sequence[tuple[str, str]],
) -> dict[str, object]:
    """An in-toto test-result v0.1 predicate (``TEST_RESULT``).

    *configuration* lists what the tests ran with, as ``(name, "sha256:<hex>")`` pairs.
    """
    if result not in TEST_RESULTS:
        raise BakeError(f"test result must be one of {', '.join(TEST_RESULTS)}, not {result!r}")
    if result == "PASSED" and failed:
        raise BakeError(f"test result is PASSED but {len(failed)} test(s) failed")
    return {
        "result": result,
        "configuration": [{"name": name, "digest": _digest_set(d)} for name, d in configuration],
        "passedTests": list(passed),
        "warnedTests": [],
        "failedTests": list(failed),
    }


# pytest would otherwise collect the predicate builder as a test when it is imported.
test_result.__test__ = False  # type: ignore[attr-defined]  # a function attribute pytest reads
