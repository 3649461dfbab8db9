from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bake.attest.digest import sha256_bytes
from bake.attest.keys import PublicKey, SigningKey, load_public_key, load_signing_key, write_keypair
from bake.errors import BakeError, RegistryError, TrustError
from bake.registry import client, model
from bake.registry.client import FreshnessState, Snapshot
from bake.registry.dirstore import DirRegistry
from bake.registry.model import ImageDoc, Release, TargetOutput

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Keys:
    signer: SigningKey
    public: PublicKey


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    key_path, pub_path = write_keypair(tmp_path / "publisher", b"secret")
    return Keys(load_signing_key(key_path, b"secret"), load_public_key(pub_path))


@pytest.fixture
def state(tmp_path: Path) -> FreshnessState:
    return FreshnessState.default({"BAKE_STATE_DIR": str(tmp_path / "state")})


@pytest.fixture
def reg(tmp_path: Path, keys: Keys) -> DirRegistry:
    registry = DirRegistry.at(tmp_path / "reg")
    client.init(registry, keys.signer, now=T0)
    return registry


def rel(name: str = "web", version: str = "1.0.0", out: str = "a", **kw: Any) -> Release:
    d = sha256_bytes(f"{name}{version}{out}".encode())
    return Release(name, version, f"key-{out}", T0, {"docker": TargetOutput(d)}, **kw)


def pub(reg: DirRegistry, keys: Keys, release: Release, **kw: Any) -> client.Published:
    kw.setdefault("now", T0)
    return client.publish(reg, keys.signer, [keys.public], release, **kw)


def read(reg: DirRegistry, keys: Keys, **kw: Any) -> Snapshot:
    kw.setdefault("now", T0)
    kw.setdefault("state", None)
    return client.read(reg, [keys.public], **kw)


# --------------------------------------------------------------------------- basics


def test_init_then_read(reg: DirRegistry, keys: Keys) -> None:
    snapshot = read(reg, keys)
    assert snapshot.index.serial == 1
    assert snapshot.index.issued == "2024-05-01T12:00:00Z"
    assert snapshot.index.expires == "2024-05-31T12:00:00Z"  # default lifetime: 30 days
    assert snapshot.names() == []
    envelope = json.loads((reg.root / "index.json").read_text())
    assert envelope["payloadType"] == "application/vnd.bake.index+json"


def test_init_refuses_an_initialized_registry(reg: DirRegistry, keys: Keys) -> None:
    with pytest.raises(RegistryError, match="already initialized"):
        client.init(reg, keys.signer, now=T0)


def test_reading_an_empty_folder(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(RegistryError, match="has no index"):
        read(DirRegistry.at(tmp_path / "nothing"), keys)


def test_publish_bumps_the_serial_and_republish_does_not(reg: DirRegistry, keys: Keys) -> None:
    first = pub(reg, keys, rel())
    assert (first.version, first.created, first.snapshot.index.serial) == ("1.0.0+1", True, 2)
    again = pub(reg, keys, rel())
    assert (again.version, again.created, again.snapshot.index.serial) == ("1.0.0+1", False, 2)
    other = pub(reg, keys, rel(out="b"))
    assert (other.version, other.snapshot.index.serial) == ("1.0.0+2", 3)
    snapshot = read(reg, keys)
    assert snapshot.index.serial == 3
    assert sorted(snapshot.image("web").versions) == ["1.0.0+1", "1.0.0+2"]


def test_publish_checks_the_parent(reg: DirRegistry, keys: Keys) -> None:
    with pytest.raises(RegistryError, match="no image named 'base'"):
        pub(reg, keys, rel(parent="base@1.0.0+1"))
    pub(reg, keys, rel("base"))
    client.apply(
        reg,
        keys.signer,
        [keys.public],
        lambda s: model.Change({"base": model.revoke(s.image("base"), "1.0.0+1", "x", at=T0)}),
        now=T0,
    )
    with pytest.raises(TrustError, match="revoked"):
        pub(reg, keys, rel(parent="base@1.0.0+1"))


def test_snapshot_loads_image_documents_lazily(reg: DirRegistry, keys: Keys) -> None:
    for name in ("web", "api", "db"):
        pub(reg, keys, rel(name))

    @dataclass
    class Counting:
        inner: DirRegistry
        reads: list[str] = field(default_factory=list)

        @property
        def url(self) -> str:
            return self.inner.url

        def read_index_envelope(self) -> dict[str, Any] | None:
            return self.inner.read_index_envelope()

        def read_blob(self, digest: str) -> bytes:
            self.reads.append(digest)
            return self.inner.read_blob(digest)

    counting = Counting(reg)
    snapshot = client.read(counting, [keys.public], state=None, now=T0)  # type: ignore[arg-type]
    assert counting.reads == []
    assert snapshot.image("api").name == "api"
    assert snapshot.image("api").name == "api"  # cached
    assert counting.reads == [snapshot.index.images["api"]]
    assert snapshot.get("nope") is None
    with pytest.raises(RegistryError, match="no image named 'wbe'") as info:
        snapshot.image("wbe")
    assert info.value.hint == "did you mean 'web'?"


def test_a_mutation_that_changes_nothing_writes_nothing(reg: DirRegistry, keys: Keys) -> None:
    pub(reg, keys, rel())
    before = (reg.root / "index.json").read_bytes()
    snapshot = client.transact(reg, keys.signer, [keys.public], lambda s: {"web": s.image("web")}, now=T0)
    assert snapshot.index.serial == 2
    assert (reg.root / "index.json").read_bytes() == before


def test_a_mutation_must_file_documents_under_their_name(reg: DirRegistry, keys: Keys) -> None:
    with pytest.raises(BakeError, match="internal error"):
        client.transact(
            reg, keys.signer, [keys.public], lambda s: {"api": model.new_image_doc("web")}, now=T0
        )


# --------------------------------------------------------------------------- trust


def test_an_untrusted_key_is_refused(reg: DirRegistry, keys: Keys) -> None:
    stranger = SigningKey.generate()
    with pytest.raises(TrustError, match="is not trusted: no valid signature by a trusted key"):
        client.read(reg, [stranger.public], state=None, now=T0)
    with pytest.raises(TrustError, match="no trusted key"):
        client.read(reg, [], state=None, now=T0)


def test_a_writer_must_trust_the_current_signer(reg: DirRegistry, keys: Keys) -> None:
    stranger = SigningKey.generate()
    with pytest.raises(TrustError, match="not trusted"):
        client.publish(reg, stranger, [], rel(), now=T0)
    # Trusting the current signer, a second key may take over; its own key is trusted too.
    client.publish(reg, stranger, [keys.public], rel(), now=T0)
    client.publish(reg, stranger, [], rel(out="b"), now=T0)
    assert client.read(reg, [stranger.public], state=None, now=T0).index.serial == 3


def _rewrite_payload(reg: DirRegistry, edit: Any) -> None:
    path = reg.root / "index.json"
    envelope = json.loads(path.read_text())
    payload = json.loads(base64.b64decode(envelope["payload"]))
    edit(payload)
    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    path.write_text(json.dumps(envelope))


def test_a_tampered_index_is_refused(reg: DirRegistry, keys: Keys) -> None:
    pub(reg, keys, rel())
    _rewrite_payload(reg, lambda p: p.update(serial=99))
    with pytest.raises(TrustError, match="not trusted"):
        read(reg, keys)


def test_a_tampered_signature_is_refused(reg: DirRegistry, keys: Keys) -> None:
    path = reg.root / "index.json"
    envelope = json.loads(path.read_text())
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[0] ^= 1
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    path.write_text(json.dumps(envelope))
    with pytest.raises(TrustError):
        read(reg, keys)


def test_a_tampered_image_document_is_refused(reg: DirRegistry, keys: Keys) -> None:
    pub(reg, keys, rel())
    digest = read(reg, keys).index.images["web"]
    blob = reg.root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    blob.write_bytes(blob.read_bytes().replace(b'"key-a"', b'"key-z"'))
    snapshot = read(reg, keys)  # the index itself is intact
    with pytest.raises(TrustError, match="has the content of"):
        snapshot.image("web")


def test_a_snapshot_checks_digests_even_if_the_backend_does_not(reg: DirRegistry, keys: Keys) -> None:
    pub(reg, keys, rel())
    good = read(reg, keys)
    lying = Snapshot(good.url, good.index, lambda digest: b"{}")
    with pytest.raises(TrustError, match="does not match its digest"):
        lying.image("web")


# --------------------------------------------------------------------------- freshness


def test_an_expired_index_is_frozen_until_refreshed(reg: DirRegistry, keys: Keys) -> None:
    later = T0 + timedelta(days=30)
    with pytest.raises(TrustError, match=r"frozen index: .* expired at 2024-05-31T12:00:00Z"):
        read(reg, keys, now=later)
    # Publishers may build on an expired index: they re-sign it.
    refreshed = client.refresh(reg, keys.signer, [keys.public], now=later, ttl=timedelta(hours=1))
    assert refreshed.index.serial == 2
    assert refreshed.index.expires == "2024-05-31T13:00:00Z"
    assert read(reg, keys, now=later).index.serial == 2


def test_the_lifetime_must_be_positive(reg: DirRegistry, keys: Keys) -> None:
    with pytest.raises(BakeError, match="must be positive"):
        client.refresh(reg, keys.signer, [keys.public], now=T0, ttl=timedelta(0))


def test_a_replayed_older_index_is_refused(
    reg: DirRegistry, keys: Keys, state: FreshnessState, tmp_path: Path
) -> None:
    pub(reg, keys, rel())
    assert read(reg, keys, state=state).index.serial == 2
    old = tmp_path / "old-index.json"
    shutil.copy(reg.root / "index.json", old)
    pub(reg, keys, rel(out="b"))
    pub(reg, keys, rel(out="c"))
    assert read(reg, keys, state=state).index.serial == 4
    shutil.copy(old, reg.root / "index.json")

    with pytest.raises(TrustError, match=r"replayed index: .* serial 2, but serial 4"):
        read(reg, keys, state=state)
    # The state is per machine: it survives in the state file, not in this process.
    reloaded = FreshnessState(state.path)
    with pytest.raises(TrustError, match="replayed index"):
        read(reg, keys, state=reloaded)
    # A writer refuses to build on a replayed index too.
    with pytest.raises(TrustError, match="replayed index"):
        pub(reg, keys, rel(out="d"), state=state)
    assert read(reg, keys, state=None).index.serial == 2  # no state: no replay check


def test_the_state_file(state: FreshnessState, tmp_path: Path) -> None:
    assert state.path == tmp_path / "state" / "registries.json"
    assert state.last_serial("dir:/x") == 0
    state.record("dir:/x", 5, at=T0)
    state.record("dir:/x", 3, at=T0)  # never goes down
    state.record("dir:/y", 1, at=T0)
    assert (state.last_serial("dir:/x"), state.last_serial("dir:/y")) == (5, 1)
    data = json.loads(state.path.read_text())
    assert data["registries"]["dir:/x"] == {"serial": 5, "seen": "2024-05-01T12:00:00Z"}


def test_the_default_state_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert FreshnessState.default({}).path == tmp_path / ".local/state/bake/registries.json"


def test_a_damaged_state_file_is_reported(state: FreshnessState) -> None:
    state.path.parent.mkdir(parents=True)
    state.path.write_text("[")
    with pytest.raises(BakeError, match="cannot read the registry state file") as info:
        state.last_serial("dir:/x")
    assert info.value.hint is not None and "delete it" in info.value.hint


def test_in_memory_snapshots(keys: Keys) -> None:
    doc, _ = model.add_build(model.new_image_doc("web"), rel())
    snapshot = Snapshot.of([doc])
    assert snapshot.image("web") is doc
    assert snapshot.index.images["web"] == sha256_bytes(model.encode_image_doc(doc))


def test_transact_returns_documents_it_wrote(reg: DirRegistry, keys: Keys) -> None:
    pub(reg, keys, rel("api"))
    pub(reg, keys, rel("web"))
    seen: dict[str, ImageDoc] = {}

    def mutate(s: Snapshot) -> dict[str, ImageDoc]:
        seen["api"] = s.image("api")
        return {"web": model.promote(s.image("web"), "1.0.0", "stable", at=T0)}

    snapshot = client.transact(reg, keys.signer, [keys.public], mutate, now=T0)
    assert snapshot.cache["web"].channels["stable"].current == "1.0.0+1"
    assert snapshot.cache["api"] is seen["api"]  # unchanged documents stay cached
