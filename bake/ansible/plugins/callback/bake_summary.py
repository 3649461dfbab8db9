"""After the play: one line per failed task that names it, its host and its message, and
the last lines of what it printed, so that bake's error (which shows the end of a failed
step's output) says which task failed and why."""

from __future__ import annotations

from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bake_summary
type: aggregate
short_description: name the failed tasks at the end of a play
description:
  - Prints, after the recap, each failed or unreachable task with its host and message.
author: bake
"""

TAIL = 10


class CallbackModule(CallbackBase):  # type: ignore[misc]  # ansible-core is untyped
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bake_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures: list[tuple[str, str, str, dict[str, Any]]] = []

    def _add(self, how: str, result: Any) -> None:
        self.failures.append((how, result.task_name or "?", result.host.get_name(), dict(result.result)))

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if not ignore_errors:
            self._add("failed", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._add("unreachable", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        for how, task, host, res in self.failures:
            message = str(res.get("msg") or res.get("reason") or "").strip().splitlines()
            self._display.display(f"bake: task {task!r} {how} on {host}: {message[0] if message else ''}")
            for key in ("stdout", "stderr"):
                lines = str(res.get(key) or "").strip().splitlines()
                for line in lines[-TAIL:]:
                    self._display.display(f"bake:   {key}: {line}")
