"""Two cold bakes of debian-base and web give the same images once normalized.

Cold: each bake has a fresh state folder (no record to reuse) and the bootstrapped rootfs
is removed from the engine first, so mmdebstrap and Packer both run again. Verification
is skipped: it does not change the image, and these bakes are the slow part of the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bake import bootstrap, docker, process, reproducible
from bake.build import BuildContext, BuildOptions, bake
from bake.packer import PackerInfo
from bake.progress import PlainReporter
from tests.conftest import RECIPES
from tests.integration.conftest import environ, plan_of, require

pytestmark = pytest.mark.integration

REPOSITORY = "bake-reproducible"


def remove_rootfs(engine: docker.Engine, name: str) -> None:
    repo = bootstrap.rootfs_repository(name)
    refs = process.run(engine.call("images", "--format", "{{.Repository}}:{{.Tag}}", repo)).stdout.split()
    for ref in refs:
        process.run(engine.call("rmi", ref))


def cold_bake(engine: docker.Engine, info: PackerInfo, state: Path) -> dict[str, str]:
    """Bake web (and so debian-base) from nothing; the image IDs by name, and the rootfs."""
    remove_rootfs(engine, "debian-base")
    context = BuildContext(process.run, engine, state, PlainReporter(), environ(state))
    out = bake(context, plan_of(RECIPES / "web.yaml", info), BuildOptions(force=True, verify=False))
    (base,) = out.parents
    assert base.parent is not None
    return {
        "rootfs": base.parent["image_id"],
        "debian-base": str(base.artifact["image_id"]),
        "web": str(out.record.artifact["image_id"]),
    }


def test_two_cold_bakes_normalize_to_the_same_digests(
    engine: docker.Engine, packer_info: PackerInfo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    require("mmdebstrap", "skopeo")
    bakes = [cold_bake(engine, packer_info, tmp_path_factory.mktemp(f"cold-{i}")) for i in (1, 2)]
    # cold indeed: each bootstrapped and committed images of its own
    assert all(bakes[0][k] != bakes[1][k] for k in bakes[0])

    work = tmp_path_factory.mktemp("normalized")
    loaded: list[str] = []
    try:
        for name in ("debian-base", "web"):
            results = []
            for i, ids in enumerate(bakes, 1):
                n = reproducible.normalize(
                    process.run,
                    engine,
                    ids[name],
                    epoch=reproducible.EPOCH,
                    repository=f"{REPOSITORY}/{name}",
                    tag=f"cold-{i}",
                    work=work / f"{name}-{i}",
                )
                loaded.append(f"{REPOSITORY}/{name}:cold-{i}")
                results.append(n)
            first, second = results
            assert reproducible.diff_layers(first.layout, second.layout) == [], name
            assert first.manifest_digest == second.manifest_digest, name
            assert first.image_id == second.image_id, name
            assert "/var/cache/ldconfig/aux-cache" in first.dropped

        # the normalized web image still works: nginx finds its config, logs and user
        web = f"{REPOSITORY}/web:cold-1"
        check = engine.call("run", "--rm", "--network", "none", "--entrypoint", "nginx", web, "-t")
        assert "test is successful" in process.run(check).stderr
    finally:
        for ref in loaded:
            process.run(engine.call("rmi", ref, check=False))
