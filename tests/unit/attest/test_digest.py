"""Tests for bake.digest: file and bytes digests, canonical JSON, digest strings."""

from __future__ import annotations

import hashlib
import math
import random
import tracemalloc
from pathlib import Path

import pytest

from bake.attest.digest import (
    CHUNK,
    canonical_json,
    is_digest,
    sha256_bytes,
    sha256_file,
    split_digest,
)
from bake.errors import BakeError

SMALL = 4096


def _random_file(tmp_path: Path, size: int, seed: int = 0) -> tuple[Path, bytes]:
    data = random.Random(seed).randbytes(size)
    path = tmp_path / f"data-{size}.bin"
    path.write_bytes(data)
    return path, data


def _expected(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "size",
    [0, 1, SMALL - 1, SMALL, SMALL + 1, 2 * SMALL - 1, 2 * SMALL, 2 * SMALL + 1, 7 * SMALL + 3],
)
def test_sha256_file_matches_hashlib_around_chunk_boundaries(tmp_path: Path, size: int) -> None:
    path, data = _random_file(tmp_path, size, seed=size)
    assert sha256_file(path, chunk_size=SMALL) == _expected(data)


@pytest.mark.parametrize("size", [4 * CHUNK - 1, 4 * CHUNK, 4 * CHUNK + 1, 9 * CHUNK + 17])
def test_sha256_file_default_chunk_size(tmp_path: Path, size: int) -> None:
    path, data = _random_file(tmp_path, size, seed=size)
    assert sha256_file(path) == _expected(data)


def test_sha256_file_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.touch()
    assert sha256_file(path) == sha256_bytes(b"")
    assert sha256_file(path) == ("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_sha256_file_memory_stays_flat(tmp_path: Path) -> None:
    path, data = _random_file(tmp_path, 16 * CHUNK)
    del data
    tracemalloc.start()
    try:
        sha256_file(path, chunk_size=CHUNK)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * CHUNK  # two read buffers and change, for a 16-chunk file


def test_sha256_file_missing_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.qcow2"
    with pytest.raises(BakeError, match=r"nope\.qcow2"):
        sha256_file(missing)


def test_sha256_file_rejects_bad_chunk_size(tmp_path: Path) -> None:
    path, _ = _random_file(tmp_path, 10)
    with pytest.raises(ValueError, match="chunk_size"):
        sha256_file(path, chunk_size=0)


def test_sha256_bytes() -> None:
    assert sha256_bytes(b"abc") == ("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_canonical_json_is_sorted_compact_utf8() -> None:
    obj = {"b": [1, 2.5, None, True], "a": {"z": "é", "y": "ü"}, "ä": 1}
    assert canonical_json(obj) == '{"a":{"y":"ü","z":"é"},"b":[1,2.5,null,true],"ä":1}'.encode()


def test_canonical_json_is_deterministic_across_insertion_order() -> None:
    keys = [f"k{i}" for i in range(50)]
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    a = {k: {"n": i, "s": [k]} for i, k in enumerate(keys)}
    b = {k: a[k] for k in shuffled}
    assert list(a) != list(b)
    assert canonical_json(a) == canonical_json(b)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_json_rejects_non_finite_floats(bad: float) -> None:
    with pytest.raises(BakeError, match="canonical JSON"):
        canonical_json({"x": bad})


def test_canonical_json_rejects_unserialisable() -> None:
    with pytest.raises(BakeError, match="canonical JSON"):
        canonical_json({"x": object()})


HEX = "a" * 64


def test_split_digest() -> None:
    assert split_digest(f"sha256:{HEX}") == ("sha256", HEX)


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        (HEX, "add the algorithm"),
        (f"sha256:{'A' * 64}", "lower case"),
        (f"sha512:{HEX}", "only sha256"),
        (f"sha256:{HEX[:-1]}", "64 lowercase hex"),
        (f"sha256:{HEX}\n", "64 lowercase hex"),
        (f"sha256:{'g' * 64}", "64 lowercase hex"),
        ("", "64 lowercase hex"),
    ],
)
def test_split_digest_rejects_with_hint(bad: str, hint: str) -> None:
    with pytest.raises(BakeError) as e:
        split_digest(bad)
    assert "not a digest" in e.value.message
    assert e.value.hint is not None
    assert hint in e.value.hint


def test_is_digest() -> None:
    assert is_digest(f"sha256:{HEX}")
    assert not is_digest(HEX)
    assert not is_digest(f"sha256:{HEX}\n")
    assert not is_digest(None)
    assert not is_digest(42)
