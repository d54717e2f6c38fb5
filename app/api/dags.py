"""`/api/dags`: the DAGs this instance can run, with the JSON Schema of their configuration."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app import workflow_actions

router = APIRouter(prefix="/api/dags", tags=["workflows"])


@router.get("")
def list_dags() -> list[dict[str, Any]]:
    """Every DAG; a user DAG file that failed to load is listed with its `error` (and no `dag_id`)."""
    return workflow_actions.dags()
