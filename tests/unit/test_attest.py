"""Tests for bake.attest: keys and key files, DSSE envelopes, in-toto statements."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bake import attest
from bake.attest import (
    PAYLOAD_TYPE,
    SLSA_PROVENANCE,
    STATEMENT_V1,
    TEST_RESULT,
    PublicKey,
    SigningKey,
    generate_keypair,
    keyid_of,
    load_public_key,
    load_signing_key,
    open_statement,
    pae,
    sign_envelope,
    sign_statement,
    slsa_provenance,
    statement,
    verify_envelope,
    write_keypair,
)
from bake.digest import sha256_bytes
from bake.errors import BakeError, TrustError

IMAGE = sha256_bytes(b"image")
OTHER = sha256_bytes(b"other")


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def stranger() -> SigningKey:
    return SigningKey.generate()


def _b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode()


# --- keys ------------------------------------------------------------------------------


def test_keyid_is_sha256_of_raw_public_key(key: SigningKey) -> None:
    raw = key.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert key.keyid == hashlib.sha256(raw).hexdigest() == keyid_of(key.key.public_key())
    assert key.public.keyid == key.keyid


def test_keys_compare_and_hash_by_keyid(key: SigningKey) -> None:
    assert key.public == key.public
    assert len({key.public, key.public}) == 1
    assert "key=" not in repr(key)  # the key object stays out of logs


def test_keyid_must_match_key(key: SigningKey, stranger: SigningKey) -> None:
    with pytest.raises(ValueError, match="does not match"):
        SigningKey(stranger.keyid, key.key)
    with pytest.raises(ValueError, match="does not match"):
        PublicKey(stranger.keyid, key.key.public_key())


def test_sign_and_verify_raw(key: SigningKey, stranger: SigningKey) -> None:
    sig = key.sign(b"data")
    assert key.public.verify(sig, b"data")
    assert not key.public.verify(sig, b"datA")
    assert not stranger.public.verify(sig, b"data")


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


def test_not_ed25519(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
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
    with pytest.raises(BakeError, match=r"ec\.key holds a key of type ECDSA; .*ed25519 only"):
        load_signing_key(priv, None)
    with pytest.raises(BakeError, match=r"ec\.pub holds a key of type ECDSA; .*ed25519 only"):
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


# --- in-toto statements ------------------------------------------------------------------


def test_statement_shape() -> None:
    stmt = statement([("disk.qcow2", IMAGE)], "https://example.com/p", {"a": 1})
    assert stmt == {
        "_type": STATEMENT_V1,
        "subject": [{"name": "disk.qcow2", "digest": {"sha256": IMAGE.removeprefix("sha256:")}}],
        "predicateType": "https://example.com/p",
        "predicate": {"a": 1},
    }


def test_statement_validates_subjects() -> None:
    with pytest.raises(BakeError, match="not a digest"):
        statement([("disk", "md5:abc")], "t", {})
    with pytest.raises(BakeError, match="at least one subject"):
        statement([], "t", {})


def test_statement_round_trip(key: SigningKey) -> None:
    stmt = statement([("disk", IMAGE), ("manifest", OTHER)], "t", {"x": [1, "ü"]})
    env = sign_statement(stmt, key)
    assert (
        base64.b64decode(str(env["payload"]))
        == json.dumps(stmt, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert open_statement(env, [key.public]) == stmt
    assert open_statement(env, [key.public], expect_subject_digest=OTHER) == stmt


def test_open_statement_wrong_subject(key: SigningKey) -> None:
    env = sign_statement(statement([("disk", IMAGE)], "t", {}), key)
    wanted = sha256_bytes(b"something else")
    with pytest.raises(TrustError, match=f"not about {wanted}: its subjects are \\[{IMAGE}\\]"):
        open_statement(env, [key.public], expect_subject_digest=wanted)


def test_open_statement_untrusted(key: SigningKey, stranger: SigningKey) -> None:
    env = sign_statement(statement([("disk", IMAGE)], "t", {}), stranger)
    with pytest.raises(TrustError, match="no valid signature"):
        open_statement(env, [key.public])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"_type": "https://in-toto.io/Statement/v0.1"}', "not an in-toto Statement v1"),
        (
            b'{"_type": "https://in-toto.io/Statement/v1", "_type": "x", "subject": []}',
            "duplicate key",
        ),
        (b'{"_type": "https://in-toto.io/Statement/v1", "x": NaN}', "NaN is not valid JSON"),
        (b'{"_type": "https://in-toto.io/Statement/v1", "subject": []}', "no subject"),
        (
            b'{"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "a"}]}',
            "no predicateType",
        ),
    ],
)
def test_open_statement_rejects_bad_payloads(key: SigningKey, payload: bytes, message: str) -> None:
    with pytest.raises(TrustError, match=message):
        open_statement(sign_envelope(payload, key), [key.public])


# --- predicates --------------------------------------------------------------------------


def test_slsa_provenance() -> None:
    pred = slsa_provenance(
        build_type="https://bake.dev/packer/v1",
        external_parameters={"recipe": "web.yaml"},
        resolved_dependencies=[("https://deb.debian.org/debian", OTHER)],
        builder_id="https://bake.dev/builder/local",
        invocation_id="run-1",
        started="2024-05-01T12:00:00Z",
        finished="2024-05-01T12:10:00Z",
        packer_version="1.10.3",
    )
    assert pred == {
        "buildDefinition": {
            "buildType": "https://bake.dev/packer/v1",
            "externalParameters": {"recipe": "web.yaml"},
            "internalParameters": {"packer_version": "1.10.3"},
            "resolvedDependencies": [
                {
                    "uri": "https://deb.debian.org/debian",
                    "digest": {"sha256": OTHER.removeprefix("sha256:")},
                }
            ],
        },
        "runDetails": {
            "builder": {"id": "https://bake.dev/builder/local"},
            "metadata": {
                "invocationId": "run-1",
                "startedOn": "2024-05-01T12:00:00Z",
                "finishedOn": "2024-05-01T12:10:00Z",
            },
        },
    }
    assert SLSA_PROVENANCE == "https://slsa.dev/provenance/v1"


def test_test_result_predicate() -> None:
    pred = attest.test_result(
        result="FAILED",
        passed=["test_ssh"],
        failed=["test_ntp"],
        configuration=[("verify/test_image.py", OTHER)],
    )
    assert pred == {
        "result": "FAILED",
        "configuration": [
            {"name": "verify/test_image.py", "digest": {"sha256": OTHER.removeprefix("sha256:")}}
        ],
        "passedTests": ["test_ssh"],
        "warnedTests": [],
        "failedTests": ["test_ntp"],
    }
    assert TEST_RESULT == "https://in-toto.io/attestation/test-result/v0.1"


def test_test_result_validates() -> None:
    with pytest.raises(BakeError, match="must be one of"):
        attest.test_result(result="passed", passed=[], failed=[], configuration=[])
    with pytest.raises(BakeError, match="PASSED but 1 test"):
        attest.test_result(result="PASSED", passed=[], failed=["t"], configuration=[])


def test_attested_image_end_to_end(key: SigningKey) -> None:
    pred = attest.test_result(result="PASSED", passed=["a"], failed=[], configuration=[])
    env = sign_statement(statement([("img", IMAGE)], TEST_RESULT, pred), key)
    opened = open_statement(json.loads(json.dumps(env)), [key.public], IMAGE)
    assert opened["predicateType"] == TEST_RESULT
    assert opened["predicate"] == pred
