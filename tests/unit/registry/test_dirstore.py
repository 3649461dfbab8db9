from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path

import pytest

from bake.attest.digest import sha256_bytes
from bake.errors import RegistryError, TrustError
from bake.registry.backend import URL_HINT, open_registry
from bake.registry.dirstore import DirRegistry, atomic_write


@pytest.fixture
def store(tmp_path: Path) -> DirRegistry:
    return DirRegistry.at(tmp_path / "reg")


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


def test_blobs_are_content_addressed_and_idempotent(store: DirRegistry) -> None:
    digest = store.write_blob(b"hello")
    assert digest == sha256_bytes(b"hello")
    path = store.root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    assert path.read_bytes() == b"hello"
    mtime = path.stat().st_mtime_ns
    assert store.write_blob(b"hello") == digest
    assert path.stat().st_mtime_ns == mtime  # not rewritten
    assert store.read_blob(digest) == b"hello"
    assert leftovers(store.root) == []


def test_a_tampered_blob_is_caught(store: DirRegistry) -> None:
    digest = store.write_blob(b"hello")
    (store.root / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(b"hellO")
    with pytest.raises(TrustError, match=f"blob {digest} .* has the content of"):
        store.read_blob(digest)
    # Writing the true content again repairs the blob.
    assert store.write_blob(b"hello") == digest
    assert store.read_blob(digest) == b"hello"


def test_missing_and_malformed_blob_digests(store: DirRegistry) -> None:
    with pytest.raises(RegistryError, match="is missing from"):
        store.read_blob(sha256_bytes(b"nothing"))
    with pytest.raises(RegistryError, match="not a blob digest"):
        store.read_blob("sha256:../../index.json")


def test_index_envelope(store: DirRegistry) -> None:
    assert store.read_index_envelope() is None
    envelope = {"payloadType": "t", "payload": "cA==", "signatures": []}
    store.write_index_envelope(envelope)
    assert store.read_index_envelope() == envelope
    assert leftovers(store.root) == []


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]"])
def test_a_damaged_index_is_a_trust_error(store: DirRegistry, content: bytes) -> None:
    store.root.mkdir(parents=True)
    (store.root / "index.json").write_bytes(content)
    with pytest.raises(TrustError):
        store.read_index_envelope()


def test_atomic_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert oct(target.stat().st_mode & 0o777) == oct(0o644 & ~_umask())
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_atomic_write_reports_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(RegistryError, match="cannot write"):
        atomic_write(blocker / "child", b"x")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_lock_is_exclusive(store: DirRegistry) -> None:
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.locked():
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(10)
        fd = os.open(store.root / ".lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        release.set()
        holder.join()
    with store.locked():  # released: can be taken again
        pass


def test_open_registry_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    registry = open_registry("dir:./reg/../reg")
    assert registry.url == f"dir:{tmp_path.resolve() / 'reg'}"
    assert open_registry(registry.url).url == registry.url


def test_open_registry_chooses_the_oci_backend() -> None:
    from bake.registry.ocistore import OciRegistry

    assert isinstance(open_registry("oci://localhost:5000/bake"), OciRegistry)


@pytest.mark.parametrize("url", ["./reg", "http://example/reg", "dir:", "oci:/x", ""])
def test_bad_registry_urls_show_both_forms(url: str) -> None:
    with pytest.raises(RegistryError) as info:
        open_registry(url)
    assert info.value.hint == URL_HINT
    assert "dir:PATH" in URL_HINT and "oci://" in URL_HINT


def test_index_is_pretty_and_sorted(store: DirRegistry) -> None:
    store.write_index_envelope({"b": 1, "a": 2})
    text = (store.root / "index.json").read_text()
    assert text == json.dumps({"a": 2, "b": 1}, indent=2) + "\n"
