"""`segment-with-nnunet`: nnU-Net v2 inference with a trained model folder, written back as a DICOM SEG.

Why optional: nnU-Net needs PyTorch (gigabytes), so `nnunetv2` comes with the `nnunet` extra
(`pip install 'vireo[nnunet]'`), never by default. Without it, or without a trained model in
the models folder (`VIREO_MODELS_DIR`), the DAG is still listed, with the reason it cannot
run (`Dag.unavailable`), and a workflow asking for it is refused with that reason.

A model folder is what nnU-Net's training leaves (`<trainer>__<plans>__<configuration>`,
holding `dataset.json`, `plans.json` and `fold_<n>/checkpoint_final.pth`); put it, or the
dataset folder above it, anywhere under the models folder. The form lists every model found
with its labels from `dataset.json`; the SEG gets one segment per label, named as there.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from core.workflows.context import JobContext
from core.workflows.dag import Dag, DagInput, Step
from ingest.analysis.segmentation_dags import ResultsConfig

MODELS_ENV = "VIREO_MODELS_DIR"
EXTRA_HINT = "nnU-Net is not installed: install Vireo's nnunet extra (pip install 'vireo[nnunet]')"
MAX_DEPTH = 4
VERSION = "1"


@dataclass(frozen=True)
class NnunetModel:
    """A trained model folder: its name (path under the models folder), labels (name -> value) and folds present."""

    name: str
    folder: Path
    labels: dict[str, int]
    channels: dict[str, str]
    folds: list[str]

    def describe(self) -> str:
        names = ", ".join(label for label, value in sorted(self.labels.items(), key=lambda kv: kv[1]) if value != 0)
        return f"{self.name} (labels: {names or 'none'}; folds: {', '.join(self.folds)})"


def models_dir() -> Path | None:
    value = os.environ.get(MODELS_ENV, "").strip()
    return Path(value) if value else None


def _read_model(folder: Path, root: Path) -> NnunetModel | None:
    try:
        spec = json.loads((folder / "dataset.json").read_text())
        labels = {str(name): int(value) for name, value in spec.get("labels", {}).items() if not isinstance(value, list)}
        channels = {str(k): str(v) for k, v in (spec.get("channel_names") or spec.get("modality") or {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    folds = sorted(p.name.removeprefix("fold_") for p in folder.glob("fold_*") if (p / "checkpoint_final.pth").is_file())
    if not folds:
        return None
    return NnunetModel(folder.relative_to(root).as_posix(), folder, labels, channels, folds)


def find_models(root: Path | None = None) -> list[NnunetModel]:
    """Trained model folders (dataset.json + plans.json + a fold with checkpoint_final.pth) under the models folder."""
    root = root if root is not None else models_dir()
    if root is None or not root.is_dir():
        return []
    found = []
    for plans in sorted(root.rglob("plans.json")):
        if len(plans.relative_to(root).parts) > MAX_DEPTH + 1:
            continue
        model = _read_model(plans.parent, root)
        if model is not None:
            found.append(model)
    return found


def nnunet_installed() -> bool:
    return importlib.util.find_spec("nnunetv2") is not None and importlib.util.find_spec("torch") is not None


def why_unavailable() -> str | None:
    """The plain reason `segment-with-nnunet` cannot run here, or None when it can."""
    if not nnunet_installed():
        return EXTRA_HINT
    if models_dir() is None:
        return f"no models folder is set: put trained nnU-Net model folders in a folder and name it in {MODELS_ENV}"
    if not find_models():
        return f"no trained nnU-Net model (dataset.json, plans.json, fold_N/checkpoint_final.pth) in the models folder ({MODELS_ENV})"
    return None


def _schema_extra(schema: dict[str, Any]) -> None:
    """List the models found (asked each time the form is drawn) as the choices of `model`, with their labels."""
    models = find_models()
    field = schema.get("properties", {}).get("model")
    if field is None:
        return
    if models:
        field["enum"] = [m.name for m in models]
        field["description"] = "a trained model under the models folder: " + "; ".join(m.describe() for m in models)
    reason = why_unavailable()
    if reason:
        schema["description"] = f"Cannot run here: {reason}."


class NnunetConfig(ResultsConfig):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_schema_extra)

    model: str = Field(..., min_length=1, title="Model", description="a trained model under the models folder")
    folds: str = Field("all", title="Folds", description="'all' (every fold the model has, averaged) or fold numbers, e.g. 0 or 0,1")
    mirroring: bool = Field(False, title="Test-time mirroring", description="more accurate, 2-8 times slower")

    @model_validator(mode="after")
    def _runnable(self) -> NnunetConfig:
        reason = why_unavailable()
        if reason:
            raise ValueError(reason)
        names = [m.name for m in find_models()]
        if self.model not in names:
            raise ValueError(f"there is no trained model {self.model!r} in the models folder (found: {', '.join(names)})")
        return self


def _model(name: str) -> NnunetModel:
    for model in find_models():
        if model.name == name:
            return model
    raise ValueError(f"the model {name!r} is no longer in the models folder")


def _folds(model: NnunetModel, folds: str) -> tuple[int | str, ...]:
    if folds.strip().lower() == "all":
        return tuple(int(f) if f.isdigit() else f for f in model.folds)
    wanted = [part.strip() for part in folds.split(",") if part.strip()]
    missing = [f for f in wanted if f not in model.folds]
    if missing:
        raise ValueError(f"the model has no fold {', '.join(missing)} (it has {', '.join(model.folds)})")
    return tuple(int(f) if f.isdigit() else f for f in wanted)


def predict_labels(model: NnunetModel, image: Any, folds: tuple[int | str, ...], mirroring: bool, log: Any) -> Any:
    """nnU-Net's label map (slices, rows, columns) for a SimpleITK image, on the CPU."""
    import numpy as np
    import SimpleITK as sitk
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring, perform_everything_on_device=False,
                                device=torch.device("cpu"), verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model.folder), use_folds=folds, checkpoint_name="checkpoint_final.pth")
    array = sitk.GetArrayFromImage(image).astype(np.float32)[None]  # (channel, z, y, x), as nnU-Net's SimpleITK reader gives
    spacing = image.GetSpacing()
    properties = {"spacing": [float(spacing[2]), float(spacing[1]), float(spacing[0])]}
    log.info("nnU-Net %s, folds %s, on %s voxels", model.name, ",".join(map(str, folds)), "×".join(map(str, array.shape[1:])))
    return np.asarray(predictor.predict_single_npy_array(array, properties, None, None, False))


def _segment(ctx: JobContext) -> None:
    from ingest.results_writeback import Algorithm, Segment, build_seg, load_series_volume, store_derived, write_json

    conf: NnunetConfig = ctx.conf  # type: ignore[assignment]
    model = _model(conf.model)
    if len(model.channels) > 1:
        raise ValueError(f"the model {model.name} needs {len(model.channels)} input channels; this DAG feeds it one series")
    folds = _folds(model, conf.folds)
    rows = []
    for series in ctx.series:
        ctx.check_cancelled()
        ctx.progress(0, 4, force=True)
        image, datasets = load_series_volume(ctx, series.series_uid)
        ctx.progress(1, 4, force=True)
        labels = predict_labels(model, image, folds, conf.mirroring, ctx.log)
        ctx.progress(2, 4, force=True)
        segments = [Segment(name, labels == value) for name, value in sorted(model.labels.items(), key=lambda kv: kv[1]) if value != 0]
        present = [s for s in segments if s.mask.any()]
        if not present:
            ctx.log.warning("series %s: the model found none of its labels; no SEG is stored", series.series_uid)
            continue
        seg = build_seg(datasets, present, algorithm=Algorithm(f"nnU-Net {model.name}"[:64], VERSION), series_description=f"nnU-Net {model.name}"[:64],
                        uid_seed=f"segment-with-nnunet/{model.name}/{conf.folds}/{series.series_uid}")
        ctx.progress(3, 4, force=True)
        stored = store_derived(ctx, [seg], dataset_name=conf.results_dataset, source_series_uid=series.series_uid)
        rows.append({"source_series": series.series_uid, "seg_series": stored[0], "segments": [s.label for s in present]})
        ctx.progress(4, 4, force=True)
    write_json(ctx, "nnunet.json", {"model": model.name, "results": rows})


segment_with_nnunet = Dag(
    dag_id="segment-with-nnunet",
    description="Segment with a trained nnU-Net v2 model from the models folder (needs the nnunet extra); stores a DICOM SEG with the model's label names.",
    steps=[Step("segment", _segment)],
    config=NnunetConfig,
    version=VERSION,
    input=DagInput.SERIES,
    tags=("analysis", "segmentation"),
    unavailable=why_unavailable,
)
