"""Run one `ansible:` step's play against the build instance (started by Packer).

Packer's `shell-local` provisioner runs ``python -m bake.ansible.run CONFIG`` with bake's
own Python while the build container or VM is up; the target's template says, in the
environment, how to reach it (``BAKE_ANSIBLE_CONNECTION`` and host, port, user, key). The
play runs in this process (ansible-core's PlaybookCLI), so the extra vars, secrets
included, are handed over in memory: they are on no command line and in no file.
Secrets come from the environment bake gave Packer (``PKR_VAR_secret_NAME``, which Packer
redacts, as bake does, from all it prints) and are dropped from this process's
environment before Ansible starts anything.

Ansible is configured here, for this run alone: no ansible.cfg of the host or of the
working folder applies, only ansible.builtin (no collections from the host: they would not
be in the bake key), pipelining on (module arguments travel on stdin, not in files in the
image), no syslog entries in the image, and a summary of failed tasks at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

PLUGINS = Path(__file__).resolve().parent / "plugins"
SECRET_ENV = "PKR_VAR_secret_{name}"  # noqa: S105 - the name of a variable, not a secret
SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes"


class PlayError(Exception):
    """The play could not start: a missing setting or secret."""


def connection_vars(environ: Mapping[str, str]) -> dict[str, Any]:
    """How Ansible reaches the build instance, from what the target's template set."""
    kind = environ.get("BAKE_ANSIBLE_CONNECTION", "")
    host = environ.get("BAKE_ANSIBLE_HOST", "")
    if not kind or not host:
        raise PlayError(
            "BAKE_ANSIBLE_CONNECTION and BAKE_ANSIBLE_HOST are not set: this runs from a template "
            "bake rendered, while Packer builds"
        )
    out: dict[str, Any] = {
        "ansible_connection": kind,
        "ansible_host": host,
        "ansible_python_interpreter": "auto_silent",
    }
    if environ.get("BAKE_ANSIBLE_PORT", "0") not in ("", "0"):
        out["ansible_port"] = int(environ["BAKE_ANSIBLE_PORT"])
    if environ.get("BAKE_ANSIBLE_USER"):
        out["ansible_user"] = environ["BAKE_ANSIBLE_USER"]
    if environ.get("BAKE_ANSIBLE_KEY_FILE"):
        out["ansible_ssh_private_key_file"] = environ["BAKE_ANSIBLE_KEY_FILE"]
    if kind == "ssh":
        out["ansible_ssh_common_args"] = SSH_ARGS
    return out


def ansible_environment(home: Path, roles_path: Sequence[Path]) -> dict[str, str]:
    """ansible-core's settings for this run (environment variables it reads at import)."""
    return {
        "ANSIBLE_CONFIG": str(home / "ansible.cfg"),  # empty: no ansible.cfg of the host applies
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"),
        "ANSIBLE_COLLECTIONS_PATH": str(home / "collections"),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
        "ANSIBLE_ROLES_PATH": os.pathsep.join(str(p) for p in roles_path),
        "ANSIBLE_CONNECTION_PLUGINS": str(PLUGINS / "connection"),
        "ANSIBLE_CALLBACK_PLUGINS": str(PLUGINS / "callback"),
        "ANSIBLE_CALLBACKS_ENABLED": "bake_summary",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_FORCE_COLOR": "False",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_NO_TARGET_SYSLOG": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_FORKS": "1",
    }


def playbook_argv(config: Mapping[str, Any], folder: Path) -> list[str]:
    """ansible-playbook's arguments, extra vars apart (pure)."""
    argv = ["ansible-playbook", "-i", str(folder / config["inventory"])]
    if config.get("check"):
        argv.append("--check")
    if config.get("tags"):
        argv += ["--tags", ",".join(config["tags"])]
    if config.get("skip_tags"):
        argv += ["--skip-tags", ",".join(config["skip_tags"])]
    return [*argv, str(folder / config["wrapper"])]


def take_secrets(names: Sequence[str], environ: MutableMapping[str, str]) -> dict[str, str]:
    """The secrets' values, removed from ``environ`` as they are read."""
    values: dict[str, str] = {}
    for name in names:
        value = environ.pop(SECRET_ENV.format(name=name), None)
        if value is None:
            raise PlayError(f"secret `{name}` did not reach the play (bake passes it to Packer)")
        values[name] = value
    for key in [k for k in environ if k.startswith("PKR_VAR_secret_")]:
        del environ[key]
    return values


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0] if args else os.environ.get("BAKE_PLAY", ""))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        folder = path.parent
        secrets = take_secrets(config["secrets"], os.environ)
        extra = {**config["vars"], **connection_vars(os.environ), **secrets}
    except (OSError, ValueError, KeyError, PlayError) as exc:
        print(f"bake: cannot run the play: {exc}", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="bake-ansible-"))
    try:
        (home / "ansible.cfg").write_text("", encoding="utf-8")
        roles = [folder / p for p in config["roles_path"]]
        os.environ.update(ansible_environment(home, roles))
        try:
            from ansible.cli.playbook import PlaybookCLI  # after the environment: it is read at import
        except ImportError as exc:
            print(
                f"bake: ansible-core is not installed in bake's Python ({sys.executable}): {exc}; "
                "install bake with its dependencies (pip install -e .)",
                file=sys.stderr,
            )
            return 127

        try:
            PlaybookCLI.cli_executor([*playbook_argv(config, folder), "--extra-vars", json.dumps(extra)])
        except SystemExit as done:
            return int(done.code or 0)
        return 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
