"""Runners' results on their way back to the orchestrator: size limits, checked on both sides.

A runner's step hands back a JSON result (`JobContext.set_result`, which refuses one over the
limit before it leaves). The result travels with the job's `finished` status through the
runner's outbox, inside the sync body — so it is signed, and Fernet-encrypted whenever the
owner requires encryption. The owner checks the size again on receipt: a result over its
limit fails the runner's job with the reason instead of being stored.
"""

from __future__ import annotations

import json
from typing import Any

from core.workflows.context import DEFAULT_RESULT_LIMIT

HARD_RESULT_LIMIT = 16 * 1024 * 1024  # whatever a configuration says: a sync body must stay well below its own limit


def result_limit(conf: dict[str, Any] | None) -> int:
    """The job's `max_result_bytes` (1 MiB when unset), never above the hard limit."""
    wanted = (conf or {}).get("max_result_bytes") or DEFAULT_RESULT_LIMIT
    try:
        return max(1, min(int(wanted), HARD_RESULT_LIMIT))
    except (TypeError, ValueError):
        return DEFAULT_RESULT_LIMIT


def encoded_size(result: Any) -> int:
    return len(json.dumps(result, separators=(",", ":"), default=str).encode())


def result_refusal(result: Any, conf: dict[str, Any] | None) -> str | None:
    """Why the owner does not take a runner's result (None: it does)."""
    size, limit = encoded_size(result), result_limit(conf)
    if size > limit:
        return f"the runner's result is {size} bytes, over the limit of {limit} bytes (max_result_bytes)"
    return None
