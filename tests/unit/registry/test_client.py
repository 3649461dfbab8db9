"""The registry as TUF: written with python-tuf's Metadata API, read by its ngclient
Updater, every attack the TUF client workflow names refused."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import cast

import pytest
from tuf.api.metadata import Metadata, Root, Timestamp
from tuf.ngclient import Updater

from bake.attest.keys import SigningKey
from bake.deploy.changes import plan_promote
from bake.deploy.lock import LockFile, check_lock, pin
from bake.deploy.resolve import resolve
from bake.deploy.verified import check_attestations
from bake.errors import RegistryError, TrustError
from bake.registry import client
from bake.registry.backend import Registry
from bake.registry.layout import Policy, metadata_file
from bake.registry.model import new_image_doc
from bake.registry.roles import Signers, protect_channel, serialize
from bake.registry.updater import METADATA_URL, TARGETS_URL, RegistryFetcher
from tests.unit.registry.regs import Setup, later, now, publish, setup


@pytest.fixture
def s(tmp_path: Path) -> Setup:
    return setup(tmp_path)


def metadata(s: Setup, name: str) -> Metadata:  # type: ignore[type-arg]  # any role
    data = s.reg.read_metadata(name)
    assert data is not None
    return Metadata.from_bytes(data)


# --------------------------------------------------------------------------- basics


def test_the_first_publish_sets_up_a_tuf_repository(s: Setup) -> None:
    published = publish(s)
    assert published.created and published.version == "1.0.0+1"
    root = metadata(s, "1.root.json").signed
    assert isinstance(root, Root) and root.consistent_snapshot
    assert root.roles["root"].keyids == [s.key.keyid] == root.roles["timestamp"].keyids
    snap = s.read()
    assert snap.names() == ["web"] and snap.image("web").versions["1.0.0+1"].bake_key == "key-a"
    assert snap.policy == Policy()  # the default test gate: provenance and a PASSED test result
    assert [k.keyid for k in snap.attestation_keys] == [s.key.keyid]


def test_the_reference_client_reads_what_bake_wrote(s: Setup) -> None:
    """python-tuf's own Updater, bootstrapped with nothing but the registry's first root."""
    publish(s)
    with tempfile.TemporaryDirectory() as cache:
        updater = Updater(
            cache,
            METADATA_URL,
            target_base_url=TARGETS_URL,
            target_dir=cache,
            fetcher=RegistryFetcher(s.reg),
            bootstrap=s.reg.read_metadata("1.root.json"),
        )
        info = updater.get_targetinfo("images/web.json")
        assert info is not None
        doc = json.loads(Path(updater.download_target(info)).read_bytes())
        assert updater.get_targetinfo("attestations/web/1.0.0+1/test-result.json") is not None
    assert doc["name"] == "web" and "1.0.0+1" in doc["versions"]


def test_republishing_writes_nothing_and_versions_grow(s: Setup) -> None:
    first = publish(s)
    again = publish(s)
    assert not again.created and again.serial == first.serial
    second = publish(s, version="1.1.0", out="b")
    assert second.serial == first.serial + 1 and second.version == "1.1.0+1"


def test_a_parent_must_be_published_and_live(s: Setup) -> None:
    publish(s, "base", "1.0.0", "p")
    publish(s, "app", "1.0.0", "c", parent="base@1.0.0+1")
    with pytest.raises(RegistryError, match=r"base@9\.9\.9"):
        publish(s, "app", "1.1.0", "d", parent="base@9.9.9+1")


# --------------------------------------------------------------------------- what is refused


def test_a_key_the_deployer_does_not_trust_is_refused(s: Setup) -> None:
    publish(s)
    stranger = client.Trust((), s.base / "other", keys=(SigningKey.generate().public,))
    with pytest.raises(TrustError, match="not a root key of this registry"):
        client.read(s.reg, stranger)


def test_a_tampered_target_is_refused(s: Setup) -> None:
    publish(s)
    for path in (s.base / "reg" / "targets" / "images").iterdir():
        path.write_bytes(path.read_bytes().replace(b"key-a", b"key-z"))
    with pytest.raises(TrustError, match=r"has the content of|does not match"):
        s.read().image("web")


def test_tampered_metadata_is_refused(s: Setup) -> None:
    publish(s)
    ts = s.base / "reg" / "metadata" / "timestamp.json"
    doc = json.loads(ts.read_text())
    doc["signed"]["version"] += 5
    ts.write_text(json.dumps(doc))
    with pytest.raises(TrustError, match="not signed by the keys"):
        s.read("fresh")


def test_an_expired_timestamp_is_frozen_until_refreshed(s: Setup) -> None:
    publish(s)
    old = metadata(s, "timestamp.json")
    assert isinstance(old.signed, Timestamp)
    old.signed.version += 1
    old.signed.expires = later(hours=-1)
    old.signatures.clear()
    old.sign(s.key.signer)
    s.reg.write_metadata("timestamp.json", serialize(old))
    with pytest.raises(TrustError, match="frozen metadata"):
        s.read("fresh")
    committed = client.refresh(s.reg, s.trust(), s.signers, now=now())
    assert s.read("fresh").serial == committed.serial


def test_an_old_timestamp_put_back_is_refused_where_a_newer_was_seen(s: Setup) -> None:
    publish(s)
    replay = s.reg.read_metadata("timestamp.json")
    assert replay is not None
    publish(s, version="1.1.0", out="b")
    assert s.read().serial >= 3  # this machine saw the newer state
    s.reg.write_metadata("timestamp.json", replay)
    with pytest.raises(TrustError, match="rollback refused"):
        s.read()


def test_on_a_fresh_machine_a_lock_file_refuses_the_replayed_state(s: Setup) -> None:
    publish(s)
    replay = s.reg.read_metadata("timestamp.json")
    assert replay is not None
    publish(s, version="1.1.0", out="b")
    lock = pin(LockFile(), resolve(s.read(), "web@1.1.0", "docker"), s.reg.url, now())
    assert lock.pins[0].metadata["timestamp"] >= 3
    s.reg.write_metadata("timestamp.json", replay)
    fresh = s.read("a-fresh-runner")  # no cache: the TUF client alone cannot tell
    findings = check_lock(lock, fresh)
    assert [(f.kind, f.severity) for f in findings] == [("rollback", "error")]
    assert "timestamp" in findings[0].message


def test_a_pin_of_another_registry_is_an_error_not_skipped(s: Setup) -> None:
    publish(s)
    lock = pin(LockFile(), resolve(s.read(), "web@1.0.0", "docker"), "dir:/moved/away", now())
    findings = check_lock(lock, s.read())
    assert [(f.kind, f.severity) for f in findings] == [("unchecked", "error")]


# --------------------------------------------------------------------------- the test gate


def test_a_failed_test_result_is_refused_at_resolve(s: Setup) -> None:
    publish(s, result="FAILED")
    snap = s.read()
    res = resolve(snap, "web@1.0.0", "docker")
    with pytest.raises(TrustError, match=r"signed test result is 'FAILED'.*file /etc/motd"):
        check_attestations(res, snap)


def test_a_missing_attestation_is_refused_at_resolve(s: Setup) -> None:
    publish(s, kinds=("provenance",))
    snap = s.read()
    with pytest.raises(TrustError, match=r"has no test-result attestation, which .* requires"):
        check_attestations(resolve(snap, "web@1.0.0", "docker"), snap)


def test_a_passing_build_passes_the_gate(s: Setup) -> None:
    publish(s)
    snap = s.read()
    seen = check_attestations(resolve(snap, "web@latest", "docker"), snap)
    assert seen == ["https://slsa.dev/provenance/v1", "https://in-toto.io/attestation/test-result/v0.1"]


# --------------------------------------------------------------------------- keys


def test_root_rotation_the_client_follows_and_the_retired_key_signs_nothing(s: Setup) -> None:
    publish(s)
    old_trust = s.trust()
    s.read()  # a client that holds root v1
    new = SigningKey.generate()

    def rotate(root: Root) -> None:
        root.add_key(new.public.key, "root")
        root.revoke_key(s.key.keyid, "root")

    both = Signers(s.key, (new,))
    assert client.change_root(s.reg, old_trust, both, rotate, now=now()).pending == ()
    root2 = metadata(s, "2.root.json").signed
    assert isinstance(root2, Root) and root2.roles["root"].keyids == [new.keyid]
    assert s.read().versions.root == 2  # the client, bootstrapped from v1, updated
    # the retired key alone can no longer change root: its new version stays pending
    done = client.change_root(s.reg, old_trust, Signers(s.key), lambda r: None, now=now())
    assert done.pending == ("root",)
    # and a root v3 it signed, put in the registry by hand, is refused by every client
    forged = metadata(s, "2.root.json")
    forged.signed.version = 3
    forged.signatures.clear()
    forged.sign(s.key.signer)
    s.reg.write_metadata("3.root.json", serialize(forged))
    with pytest.raises(TrustError, match="not signed"):
        s.read("fresh")


def test_a_channel_that_needs_two_of_three_keys(s: Setup) -> None:
    publish(s)
    k1, k2, k3 = (SigningKey.generate() for _ in range(3))
    edit = protect_channel("prod", [k1.public, k2.public, k3.public], 2)
    # targets is signed by the root key (here also the online key); channel v1 by k1 and k2
    done = client.change_delegations(s.reg, s.trust(), Signers(s.key, (k1, k2)), edit, now=now())
    assert done.pending == ()
    assert s.read().protected == ("prod",)

    def promote(snap: client.Snapshot) -> object:
        return plan_promote(snap, "web@1.0.0", "prod", at=now())

    one, _change = client.apply(s.reg, s.trust(), Signers(s.key, (k1,)), promote, now=now())  # type: ignore[arg-type]
    assert one.pending == ("channel-prod",)
    with pytest.raises(RegistryError, match="prod"):
        resolve(s.read(), "web@prod", "docker")  # not moved yet
    listed = client.pending(s.reg, s.trust(), s.signers, now=now())
    assert [(p.role, len(p.signed_by), p.threshold) for p in listed] == [("channel-prod", 1, 2)]
    two = client.sign(s.reg, s.trust(), Signers(s.key, (k3,)), "channel-prod", now=now())
    assert two.pending == ()
    assert resolve(s.read(), "web@prod", "docker").version == "1.0.0+1"
    assert client.pending(s.reg, s.trust(), s.signers, now=now()) == []


def test_the_online_key_alone_cannot_move_a_protected_channel(s: Setup) -> None:
    publish(s)
    k1 = SigningKey.generate()
    edit = protect_channel("prod", [k1.public], 1)
    client.change_delegations(s.reg, s.trust(), Signers(s.key, (k1,)), edit, now=now())
    # an attacker with the online key writes prod into the image document itself
    snap = s.read()
    doc = snap.image("web")
    moved = plan_promote(client.Snapshot.of([doc]), "web@1.0.0", "prod", at=now()).docs["web"]
    from bake.registry.layout import image_path
    from bake.registry.model import encode_image_doc
    from bake.registry.roles import change_targets

    with client.writing(s.reg, s.trust(), s.signers, now()) as w:
        changes: dict[str, bytes | None] = {image_path("web"): encode_image_doc(moved)}
        staged = change_targets(changes, w.load, s.signers, now(), w.policy)
        client._store(s.reg, staged)
    assert "prod" not in s.read("fresh").image("web").channels  # only channel-prod speaks for it


def test_keys_init_with_an_offline_root_key(tmp_path: Path) -> None:
    s = setup(tmp_path)
    root_key = SigningKey.generate()
    client.init(s.reg, Signers(s.key, (root_key,)), [root_key.public], 1, Policy(), now=now())
    root = metadata(s, "1.root.json").signed
    assert isinstance(root, Root)
    assert root.roles["root"].keyids == [root_key.keyid] and root.roles["timestamp"].keyids == [s.key.keyid]
    trust = client.Trust((), tmp_path / "state", keys=(root_key.public,))
    rel_snap = client.read(s.reg, trust)
    assert rel_snap.names() == []
    with pytest.raises(RegistryError, match="already set up"):
        client.init(s.reg, Signers(s.key, (root_key,)), [root_key.public], 1, Policy(), now=now())
    # without the root key the registry cannot be set up at all
    empty = setup(tmp_path / "other")
    with pytest.raises(TrustError, match="root role needs 1 signature"):
        client.init(empty.reg, Signers(empty.key), [root_key.public], 1, Policy(), now=now())


def test_snapshot_of_for_pure_code() -> None:
    snap = client.Snapshot.of([new_image_doc("web")], serial=7)
    assert snap.serial == 7 and snap.names() == ["web"] and snap.image("web").name == "web"
    with pytest.raises(RegistryError, match="no image named 'wbe'"):
        snap.image("wbe")


def test_an_empty_folder_is_no_registry(tmp_path: Path) -> None:
    s = setup(tmp_path)
    with pytest.raises(RegistryError, match="has no root metadata"):
        s.read()
    assert metadata_file("timestamp", 9) == "timestamp.json"
    shutil.rmtree(tmp_path / "state", ignore_errors=True)


class Flaky:
    """A registry whose metadata reads fail as told first (a registry being written)."""

    def __init__(self, real: Registry, failures: dict[str, list[Exception | None]]) -> None:
        self.real, self.failures, self.url = real, failures, real.url

    def read_metadata(self, name: str) -> bytes | None:
        pending = self.failures.get(name)
        if pending:
            first = pending.pop(0)
            if isinstance(first, Exception):
                raise first
            return None
        return self.real.read_metadata(name)


def test_a_metadata_read_that_fails_once_is_read_again(s: Setup) -> None:
    """A registry being written can fail one read (a tag moving, a busy server): the
    fetcher reads again; what it gets is verified as ever."""
    publish(s)
    failures: dict[str, list[Exception | None]] = {
        "timestamp.json": [RegistryError("connection reset"), None]
    }
    fetcher = RegistryFetcher(cast(Registry, Flaky(s.reg, failures)))
    assert fetcher._metadata("timestamp.json") == s.reg.read_metadata("timestamp.json")
    assert failures["timestamp.json"] == []
    assert fetcher._metadata("99.root.json") is None  # a file that is not there: no waiting


def test_a_metadata_read_that_keeps_failing_is_an_error(s: Setup) -> None:
    failures: dict[str, list[Exception | None]] = {"timestamp.json": [RegistryError("refused")] * 4}
    with pytest.raises(RegistryError, match="refused"):
        RegistryFetcher(cast(Registry, Flaky(s.reg, failures)))._metadata("timestamp.json")
