"""`bake init NAME`: a starting recipe that validates as written."""

from __future__ import annotations

import re
from pathlib import Path

from bake.errors import BakeError
from bake.recipe.models import NAME_RE

DERIVED = """\
# yaml-language-server: $schema=https://bake.invalid/schemas/recipe.schema.json
name: {name}
version: 0.1.0
description: TODO say what this image is for
extends: {parent}
vars:
  greeting: hello
targets:
  docker: {{}}
steps:
  - packages: [curl]
  - file:
      dest: /etc/{name}/motd
      content: "{{{{ greeting }}}} from {{{{ recipe.name }}}}\\n"
verify:
  - package: {{name: curl}}
  - file: {{path: /etc/{name}/motd, contains: "{{{{ greeting }}}}"}}
"""

BASE = """\
# yaml-language-server: $schema=https://bake.invalid/schemas/recipe.schema.json
name: {name}
version: 0.1.0
description: TODO say what this image is for
base:
  bootstrap: {{distro: debian, suite: bookworm}}
targets:
  docker: {{cmd: [/bin/bash]}}
steps:
  - packages: [ca-certificates]
verify:
  - package: {{name: ca-certificates}}
"""


def scaffold(name: str, directory: Path, extends: str | None) -> Path:
    if not re.fullmatch(NAME_RE, name):
        raise BakeError(
            f"{name!r} is not a valid recipe name",
            "use lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    path = directory / f"{name}.yaml"
    if path.exists():
        raise BakeError(f"{path} already exists", "pick another name or remove the file")
    parent = extends
    if parent is None and (directory / "debian-base.yaml").is_file():
        parent = "debian-base"
    text = DERIVED.format(name=name, parent=parent) if parent else BASE.format(name=name)
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
