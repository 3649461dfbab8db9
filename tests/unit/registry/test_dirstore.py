from __future__ import annotations

import fcntl
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


def stored(data: bytes, path: str = "images/web.json") -> str:
    folder, _, base = path.rpartition("/")
    return f"{folder}/{sha256_bytes(data).removeprefix('sha256:')}.{base}"


def test_targets_are_stored_by_hash_and_idempotent(store: DirRegistry) -> None:
    name = stored(b"hello")
    store.write_target(name, b"hello")
    path = store.root / "targets" / name
    assert path.read_bytes() == b"hello"
    mtime = path.stat().st_mtime_ns
    store.write_target(name, b"hello")
    assert path.stat().st_mtime_ns == mtime  # not rewritten
    assert store.read_target(name) == b"hello"
    assert leftovers(store.root) == []
    with pytest.raises(RegistryError, match="do not match its name"):
        store.write_target(name, b"other bytes")


def test_a_tampered_target_is_caught(store: DirRegistry) -> None:
    name = stored(b"hello")
    store.write_target(name, b"hello")
    (store.root / "targets" / name).write_bytes(b"hellO")
    with pytest.raises(TrustError, match="has the content of"):
        store.read_target(name)


@pytest.mark.parametrize("name", ["../../x", "images/../../x", "", "images/short.web.json"])
def test_missing_and_malformed_target_names(store: DirRegistry, name: str) -> None:
    with pytest.raises(RegistryError):
        store.read_target(name)
    with pytest.raises(RegistryError, match="is missing from"):
        store.read_target(stored(b"nothing"))


def test_metadata_files(store: DirRegistry) -> None:
    assert store.read_metadata("timestamp.json") is None
    store.write_metadata("timestamp.json", b'{"v": 1}')
    store.write_metadata("timestamp.json", b'{"v": 2}')  # the commit point is replaced
    assert store.read_metadata("timestamp.json") == b'{"v": 2}'
    store.write_metadata("pending.root.json", b"{}")
    store.delete_metadata("pending.root.json")
    assert store.read_metadata("pending.root.json") is None
    assert sorted(p.name for p in (store.root / "metadata").iterdir()) == ["timestamp.json"]
    for bad in ("../x.json", ".hidden.json", "a/b.json", "notjson"):
        with pytest.raises(RegistryError, match="not a metadata file name"):
            store.read_metadata(bad)


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
