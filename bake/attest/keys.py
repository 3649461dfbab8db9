"""Signing keys: key pairs as bake writes and reads them, as securesystemslib keys.

ed25519 (the default) and ECDSA P-256 (`bake keygen --type ecdsa-p256`). A key's id is the
TUF/securesystemslib key id (the sha256 of the key's canonical JSON: type, scheme, public
value), so TUF metadata, DSSE envelopes and any securesystemslib consumer name keys alike.
Signing and verifying go through securesystemslib's CryptoSigner and SSlibKey (which use
`cryptography`): no hand-written crypto. Private keys are written 0600 (optionally
encrypted with a passphrase), never over an existing key unless asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import CryptoSigner, Signature, SSlibKey

from bake.errors import BakeError
from bake.infra.fsutil import atomic_write

KEYGEN_HINT = "create a key pair with `bake keygen`"
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicCryptoKey = Ed25519PublicKey | ec.EllipticCurvePublicKey

# what `bake keygen --type` makes
KEY_TYPES: dict[str, Callable[[], PrivateKey]] = {
    "ed25519": Ed25519PrivateKey.generate,
    "ecdsa-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
}


def _supported(key: object, path: Path | str) -> None:
    ok = isinstance(key, Ed25519PrivateKey | Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
        and isinstance(key.curve, ec.SECP256R1)
    )
    if not ok:
        raise BakeError(
            f"{path} holds a key of type {_key_kind(key)}; bake signs with ed25519 or ECDSA P-256",
            hint=KEYGEN_HINT,
        )


@dataclass(frozen=True)
class PublicKey:
    """A public key (securesystemslib SSlibKey). Equal keys have equal ids."""

    key: SSlibKey = field(repr=False)

    @property
    def keyid(self) -> str:
        return self.key.keyid

    @property
    def scheme(self) -> str:
        return self.key.scheme

    @classmethod
    def from_crypto(cls, key: PublicCryptoKey) -> PublicKey:
        return cls(SSlibKey.from_crypto(key))

    def verify(self, sig: bytes, data: bytes) -> bool:
        """True when *sig* is this key's signature over *data*."""
        try:
            self.key.verify_signature(Signature(self.keyid, sig.hex()), data)
        except (UnverifiedSignatureError, VerificationError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.keyid == self.keyid

    def __hash__(self) -> int:
        return hash(self.keyid)


@dataclass(frozen=True)
class SigningKey:
    """A private key, as a securesystemslib signer."""

    signer: CryptoSigner = field(repr=False)

    @property
    def keyid(self) -> str:
        return self.signer.public_key.keyid

    @classmethod
    def from_crypto(cls, key: PrivateKey) -> SigningKey:
        return cls(CryptoSigner(key, SSlibKey.from_crypto(key.public_key())))

    @classmethod
    def generate(cls, kind: str = "ed25519") -> SigningKey:
        return cls.from_crypto(KEY_TYPES[kind]())

    def sign(self, data: bytes) -> bytes:
        return bytes.fromhex(self.signer.sign(data).signature)

    @property
    def public(self) -> PublicKey:
        key = self.signer.public_key
        assert isinstance(key, SSlibKey)
        return PublicKey(key)


def generate_keypair(passphrase: bytes | None, kind: str = "ed25519") -> tuple[bytes, bytes]:
    """Return a new (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM) pair.

    The private PEM is encrypted when *passphrase* is given.
    """
    if passphrase is not None and not passphrase:
        raise BakeError(
            "the passphrase is empty",
            hint="give a non-empty passphrase, or none for an unencrypted key",
        )
    if kind not in KEY_TYPES:
        raise BakeError(f"unknown key type {kind!r}", f"key types: {', '.join(KEY_TYPES)}", exit_code=2)
    key = KEY_TYPES[kind]()
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


def write_keypair(
    prefix: Path, passphrase: bytes | None, force: bool = False, kind: str = "ed25519"
) -> tuple[Path, Path]:
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
    private_pem, public_pem = generate_keypair(passphrase, kind)
    _write_atomic(key_path, private_pem, 0o600, replace=force)
    _write_atomic(pub_path, public_pem, 0o644, replace=force)
    return key_path, pub_path


def _write_atomic(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    # Created with its final mode (less the umask): a private key is never readable by
    # others, not even between open() and a later chmod(); without `replace`, a key that
    # appeared meanwhile is not clobbered either.
    if not path.parent.is_dir():
        raise BakeError(
            f"cannot write {path}: no folder {path.parent}", "create it, or choose another prefix"
        )
    try:
        atomic_write(path, data, mode=mode, replace=replace)
    except FileExistsError as e:
        raise BakeError(f"refusing to overwrite {path}", hint="pass --force to replace the key pair") from e
    except OSError as e:
        raise BakeError(f"cannot write {path}: {e.strerror or e}") from e


def load_signing_key(path: Path, passphrase: bytes | None) -> SigningKey:
    """Load a private key from a PEM file, decrypting it with *passphrase*."""
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
    _supported(key, path)
    assert isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey)
    return SigningKey.from_crypto(key)


def load_public_key(path: Path) -> PublicKey:
    """Load a public key from a PEM (SubjectPublicKeyInfo) file."""
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
    _supported(key, path)
    assert isinstance(key, Ed25519PublicKey | ec.EllipticCurvePublicKey)
    return PublicKey.from_crypto(key)


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BakeError(f"cannot read key file {path}: {e.strerror or e}", hint=KEYGEN_HINT) from e


def _key_kind(key: object) -> str:
    kinds: list[tuple[str, tuple[type, ...]]] = [
        ("RSA", (rsa.RSAPrivateKey, rsa.RSAPublicKey)),
        ("ECDSA (not P-256)", (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)),
        ("DSA", (dsa.DSAPrivateKey, dsa.DSAPublicKey)),
        ("Ed448", (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)),
    ]
    return next((name for name, types in kinds if isinstance(key, types)), type(key).__name__)
