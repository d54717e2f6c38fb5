"""`federated-logistic-regression`: a model trained across sites on per-segment measurements, rows never leaving a site.

Each site measures the segments of the SEGs in its dataset (as `measure-segments` does, see
`ingest.analysis.segment_measurements`) and labels each row by a tag of the measured image
(e.g. PatientSex = M); `federation.learning` says what is sent each round. Round 1 fixes the
union's standardisation, every later round is one Newton (or FedAvg gradient) step of the
union's objective, so after enough rounds the model is the one a central fit would give.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from core.workflows.context import JobContext
from federation import learning
from federation.orchestration import FederatedConfig, RoundInput, federated_dag

# Imported by each job worker at its start, so a round's job does not pay for them (rounds are short).
WORKER_IMPORTS = ("SimpleITK", "highdicom", "ingest.results_writeback", "ingest.analysis.segment_measurements", "ingest.analysis.measurement_dags")

FEATURES = ("volume_ml", "surface_mm2", "mean", "sd", "min", "max", "p5", "p25", "p50", "p75", "p95")


class LogisticConfig(FederatedConfig):
    rounds: int = Field(8, ge=2, le=100, title="Rounds", description="round 1 standardises, each later round is one optimisation step")
    features: list[Literal[FEATURES]] = Field(default_factory=lambda: ["volume_ml", "mean"], min_length=1, max_length=len(FEATURES),  # type: ignore[valid-type]
                                              title="Features", description="per-segment measurements the model uses")
    segment_label: str = Field("", max_length=64, title="Segment label", description="only segments with this label (any case); empty: every segment")
    target_tag: str = Field("PatientSex", min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9]*$", title="Target tag",
                            description="the DICOM keyword of the measured image whose value is predicted")
    positive_value: str = Field("M", max_length=64, title="Positive value", description="rows whose target tag has this value are class 1")
    method: Literal["newton", "fedavg"] = Field("newton", title="Method",
                                                description="newton: sites send gradient and Hessian sums; fedavg: sites send only weights and counts")
    learning_rate: float = Field(1.0, gt=0, le=100, title="Learning rate (fedavg)")
    l2: float = Field(0.1, gt=0, le=100, title="L2 penalty", description="keeps the model unique when the classes separate")


def site_rows(ctx: JobContext, conf: LogisticConfig) -> tuple[np.ndarray, np.ndarray]:
    """This site's feature rows and 0/1 labels, one per measured segment."""
    import SimpleITK as sitk

    from ingest.analysis.measurement_dags import segment_labels, seg_and_source
    from ingest.analysis.segment_measurements import Geometry, measure
    from ingest.results_writeback import load_series_volume, seg_masks

    rows, labels = [], []
    segs = [s for s in ctx.series if s.modality == "SEG"]
    for done, series in enumerate(segs, start=1):
        ctx.check_cancelled()
        seg, source_uid = seg_and_source(ctx, series.series_uid)
        image, datasets = load_series_volume(ctx, source_uid)
        values, geometry = sitk.GetArrayViewFromImage(image), Geometry.of(image)
        target = 1.0 if str(datasets[0].get(conf.target_tag, "") or "").strip() == conf.positive_value else 0.0
        names = segment_labels(seg)
        for number, mask in sorted(seg_masks(seg, datasets).items()):
            if conf.segment_label and names.get(number, "").lower() != conf.segment_label.lower():
                continue
            measured = measure(mask, values, geometry)
            if measured["mean"] is None:
                continue
            rows.append([float(measured[f]) for f in conf.features])
            labels.append(target)
        ctx.progress(done, len(segs))
    return np.asarray(rows, dtype=float).reshape(len(rows), len(conf.features)), np.asarray(labels, dtype=float)


def _local(ctx: JobContext, round_input: RoundInput) -> dict[str, Any]:
    conf: LogisticConfig = ctx.conf  # type: ignore[assignment]
    rows, labels = site_rows(ctx, conf)
    model = round_input.previous
    ctx.log.info("%d segment rows (%d of class 1); round %d", len(labels), int(labels.sum()), round_input.round)
    if model is None:
        return learning.site_sums(rows)
    if conf.method == "fedavg":
        return learning.site_fedavg(rows, labels, model, conf.learning_rate, conf.l2, int(model["n"]))
    return learning.site_newton(rows, labels, model)


def _aggregate(results: dict[str, Any], conf: Any, previous: Any) -> dict[str, Any]:
    parts = [results[name] for name in sorted(results)]
    if previous is None:
        model = learning.merge_standardisation(parts, len(conf.features))
    elif conf.method == "fedavg":
        model = learning.merge_fedavg(parts, previous)
    else:
        model = learning.merge_newton(parts, previous, conf.l2)
    terms = ["intercept", *conf.features]
    model["features"] = list(conf.features)
    model["sites"] = len(parts)
    model["tables"] = [{"title": f"Model after step {model['step']} (P({conf.target_tag} = {conf.positive_value}))",
                        "rows": [{"term": t, "weight": round(w, 6), "mean": None if i == 0 else round(model["mean"][i - 1], 4),
                                  "sd": None if i == 0 else round(model["sd"][i - 1], 4)} for i, (t, w) in enumerate(zip(terms, model["weights"]))]}]
    return model


federated_logistic_regression = federated_dag(
    dag_id="federated-logistic-regression",
    description="Train a logistic regression across sites on per-segment measurements (e.g. predict PatientSex from volume and mean HU); "
                "only model-sized sums and counts leave a site, and the result equals a central fit on the union.",
    local=_local,
    aggregate=_aggregate,
    config=LogisticConfig,
    tags=("analysis", "learning"),
)
