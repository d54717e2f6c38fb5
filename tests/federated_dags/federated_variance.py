"""A two-round federated DAG for the orchestration tests, written as a user would write one.

Round 1: each site counts its series and their instances; the orchestrator merges the mean.
Round 2: each site sums the squared deviations of its series' instance counts from that mean
(the previous round's aggregate) and attaches a small text file; the orchestrator merges the
variance. Only sums leave a site.
"""

from __future__ import annotations

from typing import Any

from core.workflows.context import JobContext
from federation.orchestration import RoundInput, federated_dag


def _local(ctx: JobContext, round_input: RoundInput) -> Any:
    counts = [len(series.files) for series in ctx.series]
    if round_input.previous is None:
        return {"n": len(counts), "sum": sum(counts)}
    mean = float(round_input.previous["mean"])
    note = ctx.output_file("summary.txt")
    note.write_text(f"{len(counts)} series around a mean of {mean:g}\n")
    return {"n": len(counts), "squares": sum((c - mean) ** 2 for c in counts)}, [note]


def _aggregate(results: dict[str, Any], conf: Any, previous: Any) -> dict[str, Any]:
    n = sum(r["n"] for r in results.values())
    if previous is None:
        return {"n": n, "mean": sum(r["sum"] for r in results.values()) / n}
    return {"n": n, "mean": previous["mean"], "variance": sum(r["squares"] for r in results.values()) / n}


test_federated_variance = federated_dag(
    dag_id="test-federated-variance",
    description="Variance of the instances per series across sites, in two rounds (a test DAG).",
    local=_local,
    aggregate=_aggregate,
)
