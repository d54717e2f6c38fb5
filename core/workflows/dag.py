"""What a DAG is: an id, a description, a pydantic model of its configuration and a list of steps.

Steps are plain functions given a `JobContext` (see `context.py`): the input series and
their files, a work dir, a logger, the configuration, a progress reporter and a
cancellation check. Whether a DAG runs once per dataset, once per series or takes no input
series at all (imports) decides how many jobs a workflow gets. A federated DAG's workflow gets
one orchestrator job instead, which creates the runners' jobs round by round.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from core.workflows.context import JobContext

_DAG_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")


class DagInput(StrEnum):
    """How a DAG consumes its input: one job for the whole dataset, one per series, or no input series."""

    DATASET = "dataset"
    SERIES = "series"
    NONE = "none"


class NoConfig(BaseModel):
    """The configuration of a DAG that needs none."""

    model_config = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A configuration the DAG's model refuses; `errors` are pydantic's, `str()` reads well."""

    def __init__(self, dag_id: str, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        parts = []
        for e in errors:
            where = ".".join(str(p) for p in e.get("loc", ())) or "conf"
            parts.append(f"{where}: {e.get('msg')}")
        super().__init__(f"invalid configuration for {dag_id}: " + "; ".join(parts))


@dataclass(frozen=True)
class Step:
    """One step of a DAG; a failing step is tried `retries` more times, `retry_delay` seconds apart."""

    name: str
    run: Callable[[JobContext], Any]
    retries: int = 0
    retry_delay: float = 1.0


@dataclass
class Dag:
    dag_id: str
    description: str
    steps: list[Step]
    config: type[BaseModel] = NoConfig
    version: str = "1"
    input: DagInput = DagInput.DATASET
    tags: tuple[str, ...] = ()
    ui_visible: bool = True
    service: bool = False
    federated: bool = False
    # A federated DAG's steps run on every runner (each on its own data); `aggregate(results, conf, previous)` runs on
    # the orchestrator and merges the runners' results ({runner: result}) of a round. See federation/orchestration.py.
    aggregate: Callable[..., Any] | None = None
    max_active: int | None = field(default=None, metadata={"help": "jobs of this DAG running at once (None: no limit)"})
    timeout: float | None = field(default=None, metadata={"help": "seconds a job may run before it is failed"})
    destructive: bool = field(default=False, metadata={"help": "deletes data (e.g. series from the PACS): only administrators may start it"})
    source: str = ""  # the module name or file that defines it (set by the registry)
    # Why the DAG cannot run here (an optional extra not installed, no model), asked each time it is listed; None: it can.
    unavailable: Callable[[], str | None] | None = None

    def __post_init__(self) -> None:
        if not _DAG_ID.match(self.dag_id):
            raise ValueError(f"DAG id {self.dag_id!r} must be lower-case letters, digits, '-', '_' or '.'")
        if not self.steps:
            raise ValueError(f"DAG {self.dag_id} has no steps")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"DAG {self.dag_id} has steps with the same name")
        self.input = DagInput(self.input)
        if self.federated and self.aggregate is None:
            raise ValueError(f"federated DAG {self.dag_id} needs an aggregate step")

    def config_schema(self) -> dict[str, Any]:
        """The JSON Schema of the configuration (what the API publishes and the UI renders as a form)."""
        return self.config.model_json_schema()

    def validate_conf(self, conf: dict[str, Any] | None) -> BaseModel:
        try:
            return self.config.model_validate(conf or {})
        except ValidationError as exc:
            raise ConfigError(self.dag_id, exc.errors(include_url=False, include_context=False)) from exc

    def describe(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "description": self.description,
            "version": self.version,
            "config_schema": self.config_schema(),
            "input": self.input.value,
            "tags": list(self.tags),
            "ui_visible": self.ui_visible,
            "service": self.service,
            "federated": self.federated,
            "max_active": self.max_active,
            "timeout": self.timeout,
            "destructive": self.destructive,
            "steps": [s.name for s in self.steps],
            "error": None,
            "unavailable": self.unavailable_reason(),
        }

    def unavailable_reason(self) -> str | None:
        return self.unavailable() if self.unavailable is not None else None
