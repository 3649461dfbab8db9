"""What every use case runs with, loaded once per command: settings, the state folder, the
environment, the process runner and the clock.

Python code, tests and benchmarks make a :class:`Session` (``Session.load()`` reads
`bake.toml` and the environment as the CLI does) and call the use cases in
:mod:`bake.app` with typed arguments; the CLI only parses, calls and renders.

Kept free of pydantic, Typer and Rich: `bake resolve` (what deployers run on every
deploy) starts from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bake.infra import process
from bake.infra.process import Runner
from bake.infra.settings import Settings, find_root, load_settings, state_dir

if TYPE_CHECKING:
    from bake.infra.packer import PackerInfo
    from bake.registry.backend import Registry
    from bake.registry.client import Snapshot, Trust
    from bake.registry.roles import Signers
    from bake.targets.base import BakeContext, Spawner
    from bake.ui.progress import Reporter


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RegistryAccess:
    """Which registry, whom to trust, who signs: flags first, then settings (bake.toml and
    BAKE_REGISTRY, BAKE_TRUST, BAKE_SIGNING_KEY)."""

    url: str | None = None
    trust: tuple[str, ...] = ()  # root.json, or root public keys
    key: str | None = None  # the online signing key
    sign_with: tuple[str, ...] = ()  # offline keys: root, targets, protected channels


@dataclass(frozen=True)
class Reader:
    registry: Registry
    snapshot: Snapshot


@dataclass(frozen=True)
class Writer:
    registry: Registry
    signers: Signers
    trust: Trust


@dataclass(frozen=True)
class Session:
    root: Path
    settings: Settings
    environ: Mapping[str, str]
    runner: Runner = process.run
    spawn: Spawner = process.spawn
    clock: Callable[[], datetime] = utcnow
    _state: list[Path] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def load(cls, cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Session:
        env = dict(os.environ if environ is None else environ)
        root = find_root(cwd)
        return cls(root=root, settings=load_settings(root, env), environ=env)

    @property
    def state(self) -> Path:
        """The state folder (made on first use: read-only commands need none)."""
        if not self._state:
            self._state.append(state_dir(self.root, self.settings))
        return self._state[0]

    def now(self) -> datetime:
        return self.clock()

    def search_path(self) -> list[Path]:
        return [self.root / p for p in self.settings.recipes_path]

    def packer_info(self, version: str | None = None) -> PackerInfo:
        """The Packer to render for: `version` if given, else the one on PATH (cached)."""
        from bake.infra import packer

        if version:
            return packer.PackerInfo(packer.parse_version(f"Packer v{version}"))
        return packer.detect_cached(self.runner, self.state / "packer-version.json")

    def bake_context(self, reporter: Reporter, state: Path | None = None) -> BakeContext:
        from bake.targets.base import BakeContext

        return BakeContext(
            runner=self.runner,
            state=state or self.state,
            reporter=reporter,
            environ=self.environ,
            spawn=self.spawn,
            clock=self.clock,
        )

    # --- the registry -------------------------------------------------------------------

    def trust_state(self) -> Path:
        """This machine's cache of what it trusted per registry (BAKE_STATE_DIR, else
        ~/.local/state/bake): lost or poisoned, it costs no trust (see bake.registry.updater)."""
        from bake.registry.updater import state_base

        return state_base(self.environ)

    def open_registry(self, access: RegistryAccess) -> Registry:
        from bake.registry.backend import open_registry
        from bake.registry.trust import registry_url

        return open_registry(registry_url(access.url, self.settings.registry))

    def trust(self, access: RegistryAccess, *, required: bool = True) -> Trust:
        from bake.registry.client import Trust
        from bake.registry.trust import trust_anchors

        paths = list(access.trust) or list(self.settings.trust)
        anchors = trust_anchors(paths) if required or paths else ()
        return Trust(anchors, self.trust_state())

    def reader(self, access: RegistryAccess) -> Reader:
        """The registry and its state, as the TUF client verified it."""
        from bake.registry import client

        registry = self.open_registry(access)
        return Reader(registry, client.read(registry, self.trust(access)))

    def writer(self, access: RegistryAccess) -> Writer:
        """The registry, the keys at hand and the trust anchors, for changing the registry.
        Without trust anchors a writer trusts its own online key as the root key."""
        from bake.registry.trust import signers

        registry = self.open_registry(access)
        keys = signers(access.key or self.settings.signing_key, access.sign_with, self.environ)
        trust = self.trust(access, required=False)
        if not trust.anchors:
            trust = replace(trust, keys=(keys.online.public,))
        return Writer(registry, keys, trust)
