"""Bake leases: two runners that need the same bake key at once do not both bake it.

A registry whose store can hold leases (the PostgreSQL store: :class:`Leases`) is asked
before a bake: the runner that takes the lease of a bake key bakes and publishes it,
renewing the lease while it works; the others wait until the registry holds that key, then
use the published build. A runner that dies stops renewing: its lease expires (the
store's clock decides) and a waiting runner takes over. Registries without leases (``dir:``,
``oci://``) bake as before: one writer lock, no coordination of bakes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from bake.errors import BakeError

DEFAULT_SECONDS = 120.0
POLL_SECONDS = 2.0


@runtime_checkable
class Leases(Protocol):
    def acquire(self, key: str, holder: str, seconds: float) -> str | None:
        """Take (or renew) the lease of ``key`` for ``seconds``: None when ``holder`` has
        it now, else who does."""
        ...

    def release(self, key: str, holder: str) -> None: ...


def holder_id() -> str:
    """Who this runner is, for people reading the lease table and for the lease itself."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def leased(
    leases: Leases,
    key: str,
    *,
    holder: str,
    published: Callable[[], str | None],
    seconds: float = DEFAULT_SECONDS,
    poll: float = POLL_SECONDS,
    waiting: Callable[[str], None] = lambda _holder: None,
    timeout: float = 6 * 3600.0,
) -> Iterator[str | None]:
    """Yield None while this runner holds the lease of ``key`` (bake and publish it now),
    or the version another runner published meanwhile (use that). The lease is renewed
    every third of ``seconds`` while held and released after."""
    deadline = time.monotonic() + timeout
    told = ""
    while True:
        other = leases.acquire(key, holder, seconds)
        done = published()  # after taking it too: one may have published just before
        if done is not None:
            if other is None:
                leases.release(key, holder)
            yield done
            return
        if other is None:
            break
        if other != told:
            waiting(other)
            told = other
        if time.monotonic() > deadline:
            raise BakeError(
                f"waited {timeout:.0f} s for {other} to publish {key[:19]}",
                "it may be stuck while renewing its lease; stop that runner, then bake again",
            )
        time.sleep(poll)
    stop = threading.Event()

    def renew() -> None:
        # a failed renewal (the store unreachable for a moment) is tried again at the next
        # beat; a runner that lost its lease for good may bake a key twice, which costs
        # time only: publishing the same bake key again adds nothing
        while not stop.wait(seconds / 3):
            with contextlib.suppress(BakeError):
                leases.acquire(key, holder, seconds)

    thread = threading.Thread(target=renew, name=f"lease {key[:19]}", daemon=True)
    thread.start()
    try:
        yield None
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(BakeError):
            leases.release(key, holder)
