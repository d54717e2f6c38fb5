"""`/api/dags`: the DAGs this instance can run, with the JSON Schema of their configuration."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from app import workflow_actions

router = APIRouter(prefix="/api/dags", tags=["workflows"])


@router.get("")
def list_dags(tag: str | None = Query(None, description="only DAGs with this tag (e.g. import)")) -> list[dict[str, Any]]:
    """Every DAG; a user DAG file that failed to load is listed with its `error` (and no `dag_id`)."""
    dags = workflow_actions.dags()
    return [d for d in dags if tag in d.get("tags", [])] if tag else dags
