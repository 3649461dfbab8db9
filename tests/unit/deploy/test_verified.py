"""The artifact-byte check of `bake resolve` and its cache of blobs that hashed right: an
entry someone else wrote into the state folder must not make altered bytes pass."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bake.attest.digest import sha256_bytes
from bake.deploy.verified import CACHE_FILE, KEY_FILE, HashCache, _stamp, check_layout_image, default_cache
from bake.errors import TrustError


def blob(layout: Path, data: bytes) -> str:
    digest = sha256_bytes(data)
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


@pytest.fixture
def image(tmp_path: Path) -> tuple[str, Path]:
    """An OCI layout with one layer: its ref by digest, and the layer's file."""
    layout = tmp_path / "reg" / "oci" / "web"
    layer = blob(layout, b"layer bytes as verified" * 1000)
    config = blob(layout, b'{"architecture": "amd64"}')
    manifest = json.dumps(
        {"config": {"digest": config, "size": 25}, "layers": [{"digest": layer, "size": 23000}]}
    ).encode()
    ref = f"oci-layout://{layout}@{blob(layout, manifest)}"
    return ref, layout / "blobs" / "sha256" / layer.removeprefix("sha256:")


def alter(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))


def cached(state: Path) -> dict[str, object]:
    doc = json.loads((state / CACHE_FILE).read_text())
    assert isinstance(doc, dict)
    return doc


def test_blobs_are_remembered_and_a_changed_one_is_hashed_again(
    image: tuple[str, Path], tmp_path: Path
) -> None:
    ref, layer = image
    env = {"BAKE_STATE_DIR": str(tmp_path / "state")}
    check_layout_image(ref, default_cache(env))
    assert len(cached(tmp_path / "state")) == 3
    assert (tmp_path / "state" / KEY_FILE).stat().st_mode & 0o777 == 0o600
    check_layout_image(ref, default_cache(env))  # from the cache
    alter(layer)
    with pytest.raises(TrustError, match="was altered"):
        check_layout_image(ref, default_cache(env))


@pytest.mark.parametrize("form", ["plain", "forged-mac"])
def test_a_forged_entry_does_not_make_altered_bytes_pass(
    image: tuple[str, Path], tmp_path: Path, form: str
) -> None:
    """Whoever can write the state folder writes an entry for the altered layer (its
    current stat, the digest the manifest expects): resolve still hashes it."""
    ref, layer = image
    state = tmp_path / "state"
    env = {"BAKE_STATE_DIR": str(state)}
    check_layout_image(ref, default_cache(env))
    expected = f"sha256:{layer.name}"
    alter(layer)
    entries = cached(state)
    key = f"{layer}|{_stamp(layer.stat())}"
    entries[key] = expected if form == "plain" else {"digest": expected, "mac": "0" * 64}
    (state / CACHE_FILE).write_text(json.dumps(entries))
    with pytest.raises(TrustError, match="was altered"):
        check_layout_image(ref, default_cache(env))


def test_a_cache_restored_from_elsewhere_keys_nothing(image: tuple[str, Path], tmp_path: Path) -> None:
    """A CI cache restores the state folder of another job, key file included, with an
    entry its author made for altered bytes: the key is bound to its own file, so the
    restored copy verifies no entry."""
    ref, layer = image
    job_a, job_b = tmp_path / "job-a", tmp_path / "job-b"
    check_layout_image(ref, default_cache({"BAKE_STATE_DIR": str(job_a)}))
    alter(layer)
    forged = default_cache({"BAKE_STATE_DIR": str(job_a)})  # the attacker holds job A's key
    forged.known[f"{layer}|{_stamp(layer.stat())}"] = f"sha256:{layer.name}"
    forged.dirty = True
    forged.save()
    shutil.copytree(job_a, job_b)  # restored: same bytes, another file
    with pytest.raises(TrustError, match="was altered"):
        check_layout_image(ref, default_cache({"BAKE_STATE_DIR": str(job_b)}))


def test_a_key_file_others_can_read_turns_the_cache_off(image: tuple[str, Path], tmp_path: Path) -> None:
    ref, _ = image
    state = tmp_path / "state"
    check_layout_image(ref, default_cache({"BAKE_STATE_DIR": str(state)}))
    os.chmod(state / KEY_FILE, 0o644)
    cache = default_cache({"BAKE_STATE_DIR": str(state)})
    assert cache.path is None and not cache.known
    assert HashCache(state / CACHE_FILE, None).path is None
