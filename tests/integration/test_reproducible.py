"""Two cold bakes of debian-base and web give the same image digests.

Cold: each bake has a fresh state folder (no record to reuse) and the bootstrapped rootfs
is removed from the engine first, so mmdebstrap and Packer both run again. Verification
is skipped: it does not change the image, and these bakes are the slow part of the suite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bake.infra import process
from bake.infra.packer import PackerInfo
from bake.targets.base import BakeOptions
from bake.targets.docker import compare, rootfs
from bake.targets.docker import engine as docker
from bake.targets.docker import normalize as reproducible
from tests.conftest import RECIPES
from tests.integration.conftest import bakes, plan_of, require

pytestmark = pytest.mark.integration


def remove_rootfs(engine: docker.Engine, name: str) -> None:
    repo = rootfs.rootfs_repository(name)
    refs = process.run(engine.call("images", "--format", "{{.Repository}}:{{.Tag}}", repo)).stdout.split()
    for ref in refs:
        process.run(engine.call("rmi", ref))


def cold_bake(engine: docker.Engine, info: PackerInfo, state: Path) -> dict[str, str]:
    """Bake web (and so debian-base) from nothing: rootfs ID, image IDs and digests."""
    remove_rootfs(engine, "debian-base")
    context = bakes(engine, state)
    plan = plan_of(RECIPES / "web.yaml", info)
    out = context.bake(plan, BakeOptions(force=True, verify=False))
    (base,) = out.parents
    assert base.parent is not None and plan.parent is not None
    return {
        "rootfs": base.parent["image_id"],
        "debian-base": str(base.artifact.id),
        "debian-base digest": str(base.artifact.digest),
        "debian-base layout": str(layout(state, plan.parent.name, plan.parent.short_key)),
        "web": str(out.record.artifact.id),
        "web digest": str(out.record.artifact.digest),
        "web layout": str(layout(state, plan.name, plan.short_key)),
    }


def layout_documents(oci: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and manifest of the image in an OCI layout."""
    index = json.loads((oci / "index.json").read_bytes())
    blobs = oci / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
    return config, manifest


def layout(state: Path, name: str, short_key: str) -> Path:
    return state / "work" / f"{name}-docker-{short_key}" / "reproducible" / "oci"


def test_two_cold_bakes_give_the_same_digests(
    engine: docker.Engine, packer_info: PackerInfo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    require("mmdebstrap", "skopeo")
    bakes = [cold_bake(engine, packer_info, tmp_path_factory.mktemp(f"cold-{i}")) for i in (1, 2)]
    # cold indeed: each bootstrapped (and imported) a root filesystem of its own
    assert bakes[0]["rootfs"] != bakes[1]["rootfs"]
    for name in ("debian-base", "web"):
        first, second = bakes
        assert compare.diff_layers(Path(first[f"{name} layout"]), Path(second[f"{name} layout"])) == []
        assert first[f"{name} digest"] == second[f"{name} digest"], name
        assert first[name] == second[name], name  # the same image ID in the engine too
    # clean images: no builder leftovers, a PATH, the annotations on the manifest
    for name in ("debian-base", "web"):
        config, manifest = layout_documents(Path(bakes[0][f"{name} layout"]))
        assert any(e.startswith("PATH=") for e in config["config"]["Env"]), name
        notes = manifest["annotations"]
        for key in ("created", "version", "revision", "source"):
            assert notes[f"org.opencontainers.image.{key}"], (name, key)
        listing = process.run(
            engine.call("run", "--rm", "--network", "none", "--entrypoint", "ls", bakes[0][name], "-a", "/")
        ).stdout.split()
        assert "packer-files" not in listing, name
    _, web_manifest = layout_documents(Path(bakes[0]["web layout"]))
    # web is debian-base's layer, as it is, and one of its own
    _, base_manifest = layout_documents(Path(bakes[0]["debian-base layout"]))
    assert [x["digest"] for x in web_manifest["layers"][:-1]] == [
        x["digest"] for x in base_manifest["layers"]
    ]
    assert len(web_manifest["layers"]) == len(base_manifest["layers"]) + 1
    web_config, _ = layout_documents(Path(bakes[0]["web layout"]))
    assert [h["created_by"] for h in web_config["history"]] == [
        reproducible.HISTORY_NOTE,
        reproducible.CHILD_NOTE,
    ]
    assert (
        web_manifest["annotations"]["org.opencontainers.image.base.digest"] == bakes[0]["debian-base digest"]
    )
    assert web_manifest["annotations"]["org.opencontainers.image.base.name"] == "bake/debian-base:1.0.0"
    # the normalized web image still works: nginx finds its config, logs and user
    check = engine.call("run", "--rm", "--network", "none", "--entrypoint", "nginx", bakes[0]["web"], "-t")
    assert "test is successful" in process.run(check).stderr
