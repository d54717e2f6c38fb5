"""The built-in federated DAGs (the registry collects every `Dag` here).

`federated-metadata-statistics`: each site counts its dataset's series by Modality,
BodyPartExamined and Manufacturer and builds intensity histograms with the bin edges the
configuration fixes; the orchestrator sums them. Only these aggregates leave a site.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from core.workflows.context import JobContext
from federation import statistics
from federation.orchestration import FederatedConfig, RoundInput, federated_dag

DEFAULT_EDGES = [float(e) for e in range(-1024, 3073, 64)]  # 64 bins over the Hounsfield range (and most MR signal)


class StatisticsConfig(FederatedConfig):
    histogram_edges: list[float] = Field(default_factory=lambda: list(DEFAULT_EDGES), min_length=2, max_length=1001,
                                         title="Histogram bin edges",
                                         description="increasing values; every site uses these, so histograms merge exactly")
    histograms: bool = Field(True, title="Intensity histograms", description="read pixel data (off: counts only, much faster)")

    @field_validator("histogram_edges", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [float(v) for v in value.replace(";", ",").split(",") if v.strip()]
        return value

    @field_validator("histogram_edges")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError("histogram edges must be strictly increasing")
        return value


def _site_statistics(ctx: JobContext, round_input: RoundInput) -> dict[str, Any]:
    conf: StatisticsConfig = ctx.conf  # type: ignore[assignment]
    stats = statistics.empty(conf.histogram_edges)
    series = ctx.series
    for done, item in enumerate(series, start=1):
        ctx.check_cancelled()
        statistics.add_series(stats, item.files, conf.histograms)
        ctx.progress(done, len(series))
    ctx.log.info("%d series, %d instances of dataset %s", stats["series"], stats["instances"], ctx.spec.dataset)
    return stats


def _merge(results: dict[str, Any], conf: Any, previous: Any) -> dict[str, Any]:
    return statistics.merge(results[name] for name in sorted(results))


federated_metadata_statistics = federated_dag(
    dag_id="federated-metadata-statistics",
    description="Per-site counts by Modality, BodyPartExamined and Manufacturer and intensity histograms of a dataset, "
                "merged on the orchestrator; only aggregates leave a site.",
    local=_site_statistics,
    aggregate=_merge,
    config=StatisticsConfig,
)
