"""The error hierarchy: every failure a user can cause or meet is a BakeError.

A BakeError carries a message, an optional hint (what to do about it) and the exit code
the CLI returns. The CLI prints message and hint; a traceback only with ``--debug``.
"""

from __future__ import annotations


class BakeError(Exception):
    """A failure with a message for people, a hint and an exit code."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class RecipeError(BakeError):
    """A recipe (or a file it references) is invalid. Exit 2, like a usage error."""

    exit_code = 2


class ToolError(BakeError):
    """An external tool (packer, docker, mmdebstrap, skopeo) failed or is missing."""


class VerifyError(BakeError):
    """An image failed its verify checks."""


class TrustError(BakeError):
    """A signature, digest, revocation or freshness check failed."""


class RegistryError(BakeError):
    """The registry could not be read or written, or refused an operation."""


class ConflictError(RegistryError):
    """Another writer changed the registry first: the change is retried on the new state."""
