from __future__ import annotations

from pathlib import Path

import pytest

from bake.errors import ToolError
from bake.infra import packer
from bake.infra.process import Call, Result

MACHINE = """\
1795731765,,ui,say,==> docker.web: Starting docker container...
1795731766,,ui,message,    docker.web: a%!(PACKER_COMMA) b
1795731766,docker.web,artifact-count,2
1795731766,docker.web,artifact,0,builder-id,packer.post-processor.docker-import
1795731766,docker.web,artifact,0,id,sha256:8f44
1795731766,docker.web,artifact,0,string,Imported Docker image: sha256:8f44
1795731766,docker.web,artifact,0,files-count,0
1795731766,docker.web,artifact,0,end
1795731766,docker.web,artifact,1,builder-id,packer.post-processor.docker-tag
1795731766,docker.web,artifact,1,id,bake/web:1.4.0
1795731766,docker.web,artifact,1,end
1795731767,,ui,error,Build 'docker.web' errored after 1 second: boom\\nsecond line
not a machine line
"""


def test_parse_events_and_artifacts() -> None:
    events = list(packer.parse(MACHINE.splitlines()))
    assert events[1].message == "    docker.web: a, b"
    arts = packer.artifacts(events)
    assert [a.id for a in arts] == ["sha256:8f44", "bake/web:1.4.0"]
    assert arts[1].builder_id == "packer.post-processor.docker-tag"
    assert packer.errors(events) == ["Build 'docker.web' errored after 1 second: boom\nsecond line"]


@pytest.mark.parametrize(
    ("text", "version", "plugins"),
    [("Packer v1.6.6\n", (1, 6, 6), False), ("Packer v1.9.4\n\nYour version...", (1, 9, 4), True)],
)
def test_detect_version_with_injected_runner(text: str, version: tuple[int, int, int], plugins: bool) -> None:
    calls: list[Call] = []

    def runner(call: Call, on_line: object = None) -> Result:
        calls.append(call)
        return Result(call.argv, 0, text, "", 0.0)

    info = packer.detect(runner)
    assert calls[0].argv == ("packer", "version")
    assert info.version == version
    assert info.has_plugins is plugins


def test_unreadable_version() -> None:
    with pytest.raises(ToolError, match="could not read the Packer version"):
        packer.parse_version("something else")


def test_argv_builders() -> None:
    info = packer.PackerInfo((1, 6, 6))
    t = Path("/out/web.pkr.hcl")
    assert packer.validate_argv(info, t, {"b": "2", "a": "1"}) == (
        "packer", "validate", "-var", "a=1", "-var", "b=2", "--", "/out/web.pkr.hcl",
    )  # fmt: skip
    argv = packer.build_argv(info, t)
    assert argv[:2] == ("packer", "build")
    assert "-machine-readable" in argv and "-on-error=cleanup" in argv
    assert packer.init_argv(info, t) == ("packer", "init", "--", "/out/web.pkr.hcl")
