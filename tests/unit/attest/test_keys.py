"""bake.attest.keys: keys and key files."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.formats import encode_canonical

from bake.attest.digest import sha256_bytes
from bake.attest.dsse import sign_envelope, verify_envelope
from bake.attest.keys import (
    SigningKey,
    generate_keypair,
    load_public_key,
    load_signing_key,
    write_keypair,
)
from bake.errors import BakeError

IMAGE = sha256_bytes(b"image")
OTHER = sha256_bytes(b"other")


def _b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode()


# --- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p256"])
def test_keyid_is_the_tuf_keyid(kind: str) -> None:
    """sha256 over the canonical JSON of keytype, scheme and keyval: what TUF metadata and
    securesystemslib call the key, so their default verification finds our signatures."""
    key = SigningKey.generate(kind)
    doc = key.public.key.to_dict()
    canonical = str(encode_canonical(doc)).encode()  # the OLPC canonical JSON TUF specifies
    assert key.keyid == hashlib.sha256(canonical).hexdigest() == key.public.keyid
    assert doc["keytype"] == {"ed25519": "ed25519", "ecdsa-p256": "ecdsa"}[kind]


def test_keys_compare_and_hash_by_keyid(key: SigningKey) -> None:
    assert key.public == key.public
    assert len({key.public, key.public}) == 1
    assert "key=" not in repr(key)  # the key object stays out of logs


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p256"])
def test_sign_and_verify_raw(kind: str, stranger: SigningKey) -> None:
    key = SigningKey.generate(kind)
    sig = key.sign(b"data")
    assert key.public.verify(sig, b"data")
    assert not key.public.verify(sig, b"datA")
    assert not stranger.public.verify(sig, b"data")


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p256"])
def test_both_key_types_round_trip_through_files(tmp_path: Path, kind: str) -> None:
    key_path, pub_path = write_keypair(tmp_path / "k", None, kind=kind)
    key, pub = load_signing_key(key_path, None), load_public_key(pub_path)
    assert key.keyid == pub.keyid
    assert pub.verify(key.sign(b"x"), b"x")


def test_generate_keypair_unencrypted_and_encrypted() -> None:
    priv, pub = generate_keypair(None)
    assert priv.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.startswith(b"-----BEGIN PUBLIC KEY-----")
    priv, _ = generate_keypair(b"s3cret")
    assert priv.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_generate_keypair_rejects_empty_passphrase() -> None:
    with pytest.raises(BakeError, match="empty"):
        generate_keypair(b"")


def test_write_keypair_modes_and_round_trip(tmp_path: Path) -> None:
    key_path, pub_path = write_keypair(tmp_path / "signer.v1", None)
    assert (key_path.name, pub_path.name) == ("signer.v1.key", "signer.v1.pub")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    pub_mode = stat.S_IMODE(pub_path.stat().st_mode)
    assert pub_mode & 0o400
    assert not pub_mode & ~0o644  # 0644 less the umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signer.v1.key", "signer.v1.pub"]
    signing = load_signing_key(key_path, None)
    public = load_public_key(pub_path)
    assert signing.public == public
    env = sign_envelope(b"x", signing)
    assert verify_envelope(env, [public]) == b"x"


def test_write_keypair_with_passphrase(tmp_path: Path) -> None:
    key_path, pub_path = write_keypair(tmp_path / "k", b"correct horse")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    signing = load_signing_key(key_path, b"correct horse")
    assert signing.public == load_public_key(pub_path)


def test_write_keypair_refuses_to_overwrite(tmp_path: Path) -> None:
    key_path, pub_path = write_keypair(tmp_path / "k", None)
    before = key_path.read_bytes(), pub_path.read_bytes()
    with pytest.raises(BakeError, match="refusing to overwrite") as e:
        write_keypair(tmp_path / "k", None)
    assert e.value.hint is not None
    assert "--force" in e.value.hint
    assert (key_path.read_bytes(), pub_path.read_bytes()) == before


def test_write_keypair_refuses_if_only_pub_exists(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("old")
    with pytest.raises(BakeError, match=r"k\.pub"):
        write_keypair(tmp_path / "k", None)
    assert not (tmp_path / "k.key").exists()


def test_write_keypair_force_replaces(tmp_path: Path) -> None:
    key_path, _ = write_keypair(tmp_path / "k", None)
    old = load_signing_key(key_path, None)
    key_path, pub_path = write_keypair(tmp_path / "k", None, force=True)
    new = load_signing_key(key_path, None)
    assert new.keyid != old.keyid
    assert new.public == load_public_key(pub_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "k.pub"]


def test_write_keypair_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BakeError, match="cannot write"):
        write_keypair(tmp_path / "no" / "k", None)


def test_wrong_passphrase_names_file(tmp_path: Path) -> None:
    key_path, _ = write_keypair(tmp_path / "k", b"right")
    with pytest.raises(BakeError, match=r"wrong passphrase for .*k\.key"):
        load_signing_key(key_path, b"wrong")


def test_missing_passphrase(tmp_path: Path) -> None:
    key_path, _ = write_keypair(tmp_path / "k", b"right")
    with pytest.raises(BakeError, match="encrypted and no passphrase"):
        load_signing_key(key_path, None)


def test_passphrase_for_unencrypted_key(tmp_path: Path) -> None:
    key_path, _ = write_keypair(tmp_path / "k", None)
    with pytest.raises(BakeError, match="not encrypted"):
        load_signing_key(key_path, b"extra")


def test_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "junk.key"
    path.write_bytes(b"not a key\n")
    with pytest.raises(BakeError, match=r"junk\.key is not a PEM private key") as e:
        load_signing_key(path, None)
    assert e.value.hint is not None
    assert "bake keygen" in e.value.hint
    with pytest.raises(BakeError, match=r"junk\.key is not a PEM public key"):
        load_public_key(path)


def test_keys_of_other_types_are_refused(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP384R1())
    priv = tmp_path / "ec.key"
    priv.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub = tmp_path / "ec.pub"
    pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(
        BakeError, match=r"ec\.key holds a key of type ECDSA \(not P-256\); .*ed25519 or ECDSA"
    ):
        load_signing_key(priv, None)
    with pytest.raises(BakeError, match=r"ec\.pub holds a key of type ECDSA \(not P-256\)"):
        load_public_key(pub)


def test_halves_swapped(tmp_path: Path) -> None:
    key_path, pub_path = write_keypair(tmp_path / "k", None)
    with pytest.raises(BakeError, match="holds a public key"):
        load_signing_key(pub_path, None)
    with pytest.raises(BakeError, match="holds a private key"):
        load_public_key(key_path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(BakeError, match=r"cannot read key file .*absent\.key"):
        load_signing_key(tmp_path / "absent.key", None)
    with pytest.raises(BakeError, match=r"cannot read key file .*absent\.pub"):
        load_public_key(tmp_path / "absent.pub")
