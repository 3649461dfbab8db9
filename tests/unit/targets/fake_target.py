"""A target plug-in that lives outside bake: a text file "image", baked by a fake Packer.

It is the smallest complete target — its own config model, its own template (beside this
module), a session — and is plugged in with one line in bake.targets.TARGETS. The
runner below plays Packer (printing machine-readable lines and writing the file) and
pytest (reading the generated checks and writing JUnit), so the generic loop, records,
verification results and publishing are exercised for real without either tool.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from bake.infra.packer import artifacts
from bake.infra.process import Call, LineSink, Result
from bake.model import Model
from bake.plan import Plan
from bake.registry import disks
from bake.registry.backend import Registry
from bake.registry.disks import DiskFile
from bake.targets.base import (
    Artifact,
    ArtifactFile,
    BakeContext,
    BakeOptions,
    Base,
    Built,
    Evidence,
    PackerInputs,
    Plugin,
    Published,
    Stored,
    TargetSession,
    TimedEvents,
    Verification,
)
from bake.verify.run import VerifyReport, run_module, write_module

KIND = "text-file"


class FakeConfig(Model):
    greeting: str = "hello"


class Fake:
    name: ClassVar[str] = "fake"
    config: ClassVar[type[Model]] = FakeConfig
    template: ClassVar[str] = "fake.pkr.hcl.j2"
    plugin: ClassVar[Plugin] = Plugin("null", "github.com/hashicorp/null")
    bakes: ClassVar[bool] = True

    def template_context(self, plan: Plan) -> Mapping[str, object]:
        return {"source_type": "null"}

    def check(self, plan: Plan) -> None:
        return None

    @contextmanager
    def session(self, ctx: BakeContext) -> Iterator[TargetSession]:
        yield FakeSession(ctx)

    def artifact_to_json(self, artifact: Artifact) -> dict[str, Any]:
        return {"type": artifact.kind, "path": artifact.id, "digest": artifact.digest}

    def artifact_from_json(self, doc: Mapping[str, Any]) -> Artifact:
        path, digest = Path(str(doc["path"])), str(doc["digest"])
        size = path.stat().st_size if path.is_file() else 0
        return Artifact(KIND, str(path), digest, {"file": ArtifactFile(path, digest, size)})

    def describe(self, artifact: Artifact) -> list[tuple[str, str]]:
        return [("file", artifact.id)]

    def file_names(self, out: Path) -> dict[str, Path]:
        return {"file": out}

    def usage(self, files: Mapping[str, Path]) -> str | None:
        return f"cat {files['file']}"


def _file(path: Path) -> ArtifactFile:
    data = path.read_bytes()
    return ArtifactFile(path, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


class FakeSession:
    def __init__(self, ctx: BakeContext) -> None:
        self.ctx = ctx
        self.kept = ctx.state / "images" / "fake"

    def present(self, artifact: Artifact) -> bool:
        return Path(artifact.id).is_file()

    def fetch(self, plan: Plan, published: Published) -> Artifact:
        dest = self.ctx.state / "published" / f"{plan.name}-{published.version}.txt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        disks.fetch(published.registry, published.ref, dict(published.files), {"file": dest})
        f = _file(dest)
        return Artifact(KIND, str(dest), f.digest, {"file": f}, {"published": published.version})

    def base(self, plan: Plan, parent: Artifact | None, opts: BakeOptions) -> Base:
        if plan.parent is None or parent is None:
            return Base(record={"name": "scratch"})
        record = {"name": plan.parent.name, "version": plan.parent.version, "bake_key": plan.parent.key}
        return Base(record={**record, "artifact": parent.id, "digest": str(parent.digest)})

    @contextmanager
    def packer_inputs(self, plan: Plan, base: Base, work: Path) -> Iterator[PackerInputs]:
        yield PackerInputs(variables={"out": str(work / "out.txt")})

    def built(self, plan: Plan, events: TimedEvents, work: Path, opts: BakeOptions) -> Built:
        (made,) = artifacts(e for _, e in events)
        f = _file(Path(made.id))
        return Built(Artifact(KIND, str(f.path), f.digest, {"file": f}))

    def adopt(self, plan: Plan, ref: str) -> Built:
        f = _file(Path(ref))
        return Built(Artifact(KIND, ref, f.digest, {"file": f}))

    def verify(self, plan: Plan, built: Built) -> Verification:
        folder = self.ctx.state / "verify" / plan.name
        module, tests = write_module(plan.name, plan.resolved.verify, folder)
        results = run_module(self.ctx.runner, {}, f"local://{built.artifact.id}", module, tests)
        ok = all(r.outcome == "passed" for r in results)
        report = VerifyReport(ok, tuple(results), str(folder / "junit.xml"), built.artifact.id, "fake", 0.0)
        return Verification(report, {"verify": 0.0})

    def keep(self, plan: Plan, built: Built, verification: Verification | None) -> Artifact:
        self.kept.mkdir(parents=True, exist_ok=True)
        dest = self.kept / f"{plan.name}-{plan.short_key}.txt"
        shutil.move(built.artifact.id, dest)
        f = _file(dest)
        return Artifact(KIND, str(dest), f.digest, {"file": f})

    def discard(self, plan: Plan, built: Built) -> None:
        Path(built.artifact.id).unlink(missing_ok=True)

    def evidence(self, artifact: Artifact) -> Evidence:
        return Evidence()

    def copy_to(self, artifact: Artifact, registry: Registry, name: str, tag: str) -> Stored:
        f = artifact.files["file"]
        ref = registry.store_files([DiskFile("file", f.path, f.digest)], name, tag)
        return Stored(f.digest, artifact.subjects(name), ref=ref, files={"file": f.digest})


class FakeTools:
    """Plays `packer build` and `python -m pytest` for the bakes of the fake target."""

    def __init__(self, failing: str | None = None) -> None:
        self.failing = failing
        self.calls: list[Call] = []

    def __call__(self, call: Call, on_line: LineSink | None = None) -> Result:
        self.calls.append(call)
        if call.argv[:2] == ("packer", "build"):
            return self._packer(call, on_line)
        if "pytest" in call.argv:
            return self._pytest(call)
        raise AssertionError(f"the fake target runs nothing else: {call.argv}")

    def _packer(self, call: Call, on_line: LineSink | None) -> Result:
        out = Path(next(a.split("=", 1)[1] for a in call.argv if a.startswith("out=")))
        template = Path(call.argv[-1]).read_text()
        greeting = re.search(r'greeting = "([^"]*)"', template)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"{greeting[1] if greeting else '?'} from {template.count('provisioner')} steps\n")
        lines = [
            "1,fake,ui,say,==> fake: Provisioning with shell script: /w/template/scripts/01-shell.sh",
            "1,fake,artifact-count,1",
            "1,fake,artifact,0,builder-id,bake.fake",
            f"1,fake,artifact,0,id,{out}",
            "1,fake,artifact,0,end",
        ]
        for line in lines:
            if on_line is not None:
                on_line(line)
        return Result(call.argv, 0, "\n".join(lines) + "\n", "", 0.1)

    def _pytest(self, call: Call) -> Result:
        module = Path(call.argv[-1])
        junit = Path(next(a.split("=", 1)[1] for a in call.argv if a.startswith("--junitxml=")))
        cases = []
        for name, title in re.findall(r"^def (test_\w+)\(host\):\n    '([^']*)'", module.read_text(), re.M):
            failure = '<failure message="not so">assert False</failure>' if title == self.failing else ""
            cases.append(f'<testcase classname="test_verify" name="{name}">{failure}</testcase>')
        junit.write_text(f"<testsuites><testsuite>{''.join(cases)}</testsuite></testsuites>")
        return Result(call.argv, 1 if self.failing else 0, "", "", 0.1)
