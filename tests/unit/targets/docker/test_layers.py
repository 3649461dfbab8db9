"""bake.targets.docker.layers: reading `docker save`, the parent's history, the load archive."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bake.errors import BakeError
from bake.targets.docker import layers
from bake.targets.docker.normalize import CHILD_NOTE, HISTORY_NOTE

BASE = b"base layer bytes" * 100
OWN = b"the recipe's layer"


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def config_of(*blobs: bytes, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "rootfs": {"type": "layers", "diff_ids": [sha(b) for b in blobs]},
        "history": history
        if history is not None
        else [{"created": "2020-01-01T00:00:00Z", "created_by": HISTORY_NOTE}, {"created_by": "/bin/sh"}],
    }


def save_tar(config: dict[str, Any], blobs: list[bytes], names: list[str] | None = None) -> bytes:
    """A `docker save` archive as Docker 20.10 writes it: layer folders, config, manifest."""
    raw_config = json.dumps(config).encode()
    names = names or [f"{i:064x}/layer.tar" for i in range(len(blobs))]
    members = [*zip(names, blobs, strict=True), (f"{sha(raw_config)[7:]}.json", raw_config)]
    manifest = [{"Config": members[-1][0], "RepoTags": None, "Layers": names}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_read_save_writes_each_layer_and_checks_its_digest(tmp_path: Path) -> None:
    config = config_of(BASE, OWN)
    saved = layers.read_save(io.BytesIO(save_tar(config, [BASE, OWN])), tmp_path)
    assert saved.config == config
    assert [d for d, _ in saved.layers] == [sha(BASE), sha(OWN)]
    assert [p.read_bytes() for _, p in saved.layers] == [BASE, OWN]
    assert all(p.parent == tmp_path for _, p in saved.layers)


def test_a_layer_that_is_not_what_the_config_says_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BakeError, match="its config says"):
        layers.read_save(io.BytesIO(save_tar(config_of(BASE, OWN), [BASE, b"other"])), tmp_path)


@pytest.mark.parametrize(
    "raw",
    [
        b"not a tar at all" * 64,
        save_tar(config_of(BASE), [BASE])[:1024] + b"\0" * 1024,  # cut short: no manifest
    ],
)
def test_a_save_it_cannot_read_is_a_clear_error(tmp_path: Path, raw: bytes) -> None:
    with pytest.raises(BakeError, match="docker save"):
        layers.read_save(io.BytesIO(raw), tmp_path)


def test_the_oci_style_save_of_newer_engines_reads_too(tmp_path: Path) -> None:
    blobs = [BASE, OWN]
    saved = layers.read_save(
        io.BytesIO(save_tar(config_of(*blobs), blobs, [f"blobs/sha256/{sha(b)[7:]}" for b in blobs])),
        tmp_path,
    )
    assert [d for d, _ in saved.layers] == [sha(BASE), sha(OWN)]


def test_parent_history_is_bake_s_own_for_the_parent_s_layers_plus_one() -> None:
    config = config_of(BASE, OWN)
    assert layers.parent_history(config, [sha(BASE)]) == [
        {"created": "2020-01-01T00:00:00Z", "created_by": HISTORY_NOTE}
    ]
    two = config_of(BASE, OWN, history=[{"created_by": HISTORY_NOTE}, {"created_by": CHILD_NOTE}, {}])
    assert layers.parent_history(two, [sha(BASE)]) == [{"created_by": HISTORY_NOTE}]


@pytest.mark.parametrize(
    ("config", "parent"),
    [
        (config_of(BASE, OWN), []),  # no parent
        (config_of(BASE, OWN), [sha(b"another")]),  # built on something else
        (config_of(BASE, b"x", OWN), [sha(BASE)]),  # more than one layer of its own
        (config_of(BASE, OWN, history=[{"created_by": "/bin/sh -c #(nop) ADD rootfs"}, {}]), [sha(BASE)]),
        (config_of(BASE, OWN, history=[{"created_by": HISTORY_NOTE, "empty_layer": True}, {}]), [sha(BASE)]),
        (config_of(BASE, OWN, history=[]), [sha(BASE)]),
    ],
)
def test_parent_history_refuses_what_it_cannot_keep_reproducible(
    config: dict[str, Any], parent: list[str]
) -> None:
    assert layers.parent_history(config, parent) is None


def test_the_load_archive_names_every_layer_and_carries_the_new_one_only(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.write_bytes(OWN)
    config = json.dumps(config_of(BASE, OWN)).encode()
    buf = io.BytesIO()
    layers.load_archive(buf, config, [(sha(BASE), None), (sha(OWN), own)], "bake/web:key-1")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert tar.extractfile(f"{sha(OWN)[7:]}/layer.tar").read() == OWN  # type: ignore[union-attr]
        assert tar.extractfile(manifest[0]["Config"]).read() == config  # type: ignore[union-attr]
    assert f"{sha(BASE)[7:]}/layer.tar" not in names
    assert manifest[0]["Layers"] == [f"{sha(BASE)[7:]}/layer.tar", f"{sha(OWN)[7:]}/layer.tar"]
    assert manifest[0]["RepoTags"] == ["bake/web:key-1"]
    assert manifest[0]["Config"] == f"{sha(config)[7:]}.json"


# --- reusing the parent's own layout --------------------------------------------------------


def test_a_layer_the_parent_s_layout_holds_is_checked_not_written(tmp_path: Path) -> None:
    local = tmp_path / "parent-blob"
    local.write_bytes(BASE)
    into = tmp_path / "into"
    into.mkdir()
    saved = layers.read_save(
        io.BytesIO(save_tar(config_of(BASE, OWN), [BASE, OWN])), into, {sha(BASE): local}
    )
    assert saved.layers[0] == (sha(BASE), local)
    assert saved.reused == {sha(BASE)}
    assert [p.read_bytes() for p in into.iterdir()] == [OWN]  # only the new layer was written


def test_a_parent_file_that_does_not_hash_right_is_lost(tmp_path: Path) -> None:
    local = tmp_path / "parent-blob"
    local.write_bytes(b"X" * len(BASE))  # a cache file of the right size that is not the layer
    with pytest.raises(layers.Lost):
        layers.read_save(
            io.BytesIO(save_tar(config_of(BASE, OWN), [BASE, OWN])), tmp_path, {sha(BASE): local}
        )


def test_a_new_layer_the_size_of_the_parent_s_is_lost_not_mistaken(tmp_path: Path) -> None:
    same_size = b"y" * len(BASE)
    local = tmp_path / "parent-blob"
    local.write_bytes(BASE)
    with pytest.raises(layers.Lost):
        layers.read_save(
            io.BytesIO(save_tar(config_of(BASE, same_size), [BASE, same_size])), tmp_path, {sha(BASE): local}
        )
