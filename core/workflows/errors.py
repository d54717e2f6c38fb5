"""The error the workflow engine answers a request it refuses with (its own module: the engine and its input checks share it)."""

from __future__ import annotations

from typing import Any


class WorkflowError(ValueError):
    """A request the engine refuses (bad DAG, configuration or input); the message says why.

    `errors` holds pydantic's per-field errors when the configuration was refused (a form marks its fields with them).
    """

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []

