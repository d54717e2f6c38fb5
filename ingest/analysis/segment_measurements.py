"""Per-segment measurements of a mask on its image: size, shape, position and intensity statistics.

Pure numpy on a bool mask and the image's values (both (slices, rows, columns), the order
`ingest.results_writeback.load_series_volume` gives), plus the image's geometry, so the numbers
can be checked against an independent computation and do not depend on how the data was read.

Surface area is the *voxel-face* area: every face between a voxel inside the segment and one
outside it (or the volume's edge) counts, with the area of that face (the product of the two
spacings across it). It is exact for the voxelised object, needs no extra library
(scikit-image's marching cubes is not installed), and is larger than a smooth surface's area
(by up to ~1.5× for a sphere), so it compares segments of the same grid rather than anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

PERCENTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True)
class Geometry:
    """Where the voxels are: spacing (columns, rows, slices) in mm, origin (LPS mm), direction (3×3, columns = axes)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: Any) -> Geometry:
        """The geometry of a SimpleITK image."""
        return cls(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def to_patient(self, index_xyz: np.ndarray) -> np.ndarray:
        """Continuous voxel index (column, row, slice) to patient coordinates in mm."""
        matrix = np.asarray(self.direction, dtype=float).reshape(3, 3)
        return np.asarray(self.origin, dtype=float) + matrix @ (np.asarray(self.spacing, dtype=float) * index_xyz)


def surface_area_mm2(mask: np.ndarray, spacing_xyz: tuple[float, float, float]) -> float:
    """The voxel-face surface area of `mask` (slices, rows, columns) in mm² (see the module docstring)."""
    sx, sy, sz = spacing_xyz
    mask = mask.astype(bool, copy=False)
    face = {0: sx * sy, 1: sx * sz, 2: sy * sz}  # faces across slices, rows, columns
    total = 0.0
    for axis, area in face.items():
        ahead, behind, first, last = ([slice(None)] * 3 for _ in range(4))
        ahead[axis], behind[axis], first[axis], last[axis] = slice(1, None), slice(None, -1), 0, -1
        inner = int(np.count_nonzero(mask[tuple(ahead)] != mask[tuple(behind)]))  # views: no copy of the mask
        total += (inner + int(np.count_nonzero(mask[tuple(first)])) + int(np.count_nonzero(mask[tuple(last)]))) * area
    return float(total)


def percentiles(values: np.ndarray, qs: tuple[int, ...] = PERCENTILES) -> list[float]:
    """numpy's default (linear) percentiles; for whole-number values (CT in HU) by counting, in one pass instead of a sort.

    A body mask holds ~10⁸ voxels, where `np.percentile`'s partitions take seconds; counting is exact too.
    """
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1 << 22 and np.array_equal(values, np.rint(values)):
        cumulative = np.cumsum(np.bincount((values - lo).astype(np.int32)))

        def kth(k: int) -> float:  # the k-th smallest value (0-based)
            return lo + float(np.searchsorted(cumulative, k, side="right"))

        out = []
        for q in qs:
            position = q / 100.0 * (values.size - 1)
            below = int(np.floor(position))
            a, b = kth(below), kth(min(below + 1, values.size - 1))
            out.append(a + (b - a) * (position - below))
        return out
    return [float(v) for v in np.percentile(values, qs)]


def measure(mask: np.ndarray, values: np.ndarray, geometry: Geometry) -> dict[str, Any]:
    """Everything measured of one segment; an empty segment gives its zero size and no statistics (None)."""
    mask = mask.astype(bool)
    sx, sy, sz = geometry.spacing
    voxels = int(np.count_nonzero(mask))
    voxel_mm3 = sx * sy * sz
    result: dict[str, Any] = {"voxels": voxels, "volume_mm3": voxels * voxel_mm3, "volume_ml": voxels * voxel_mm3 / 1000.0,
                              "surface_mm2": 0.0}
    if not voxels:
        return {**result, **{k: None for k in ("bbox_voxel_min", "bbox_voxel_max", "bbox_mm", "centroid_mm", "mean", "sd", "min", "max")},
                **{f"p{p}": None for p in PERCENTILES}}
    # No np.nonzero: on a 512×512×300 body mask its index arrays alone are a gigabyte. Projections give the
    # bounding box and the centroid; the rest runs on the box.
    axes = ((1, 2), (0, 2), (0, 1))
    counts = [np.count_nonzero(mask, axis=a) for a in axes]  # voxels per slice, per row, per column
    lo = [int(np.argmax(c > 0)) for c in counts]
    hi = [int(len(c) - 1 - np.argmax(c[::-1] > 0)) for c in counts]
    centre_zyx = [float(np.dot(np.arange(len(c)), c)) / voxels for c in counts]
    box = tuple(slice(l, h + 1) for l, h in zip(lo, hi))
    result["surface_mm2"] = surface_area_mm2(mask[box], geometry.spacing)
    extent_zyx = [(h - l + 1) for l, h in zip(lo, hi)]
    inside = np.asarray(values[box])[mask[box]]  # the image's own dtype (float32): a body mask selects ~10⁸ values
    stats = percentiles(inside)
    result.update(
        bbox_voxel_min=lo, bbox_voxel_max=hi,  # (slice, row, column), inclusive
        bbox_mm=[extent_zyx[2] * sx, extent_zyx[1] * sy, extent_zyx[0] * sz],  # (x along rows, y along columns, z across slices)
        centroid_mm=[float(v) for v in geometry.to_patient(np.asarray(centre_zyx[::-1], dtype=float))],
        mean=float(inside.mean(dtype=np.float64)), sd=float(inside.std(dtype=np.float64)), min=float(inside.min()), max=float(inside.max()),
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, stats)},
    )
    return result


def sr_measurements(measured: dict[str, Any], unit: str) -> list[dict[str, Any]]:
    """The numbers of `measure` as the name/value/unit dicts `results_writeback.build_measurement_sr` takes."""
    items = [("Volume", measured["volume_mm3"], "mm3"), ("Voxel count", measured["voxels"], "1"), ("Surface area", measured["surface_mm2"], "mm2")]
    if measured.get("mean") is not None:
        items += [("Mean", measured["mean"], unit), ("Standard deviation", measured["sd"], unit), ("Minimum", measured["min"], unit),
                  ("Maximum", measured["max"], unit), ("Median", measured["p50"], unit)]
        items += [(f"Percentile {p}", measured[f"p{p}"], unit) for p in PERCENTILES if p != 50]
        items += [(f"Centroid {axis}", measured["centroid_mm"][i], "mm") for i, axis in enumerate("xyz")]
        items += [(f"Extent {axis}", measured["bbox_mm"][i], "mm") for i, axis in enumerate("xyz")]
    return [{"name": n, "value": float(v), "unit": u} for n, v, u in items]


def table_row(measured: dict[str, Any]) -> dict[str, Any]:
    """A flat row for the CSV and the Result tab (lists spelled out per axis, numbers rounded for people)."""
    row: dict[str, Any] = {}
    for key, value in measured.items():
        if isinstance(value, list):
            for axis, v in zip("xyz" if key in ("bbox_mm", "centroid_mm") else ("slice", "row", "column"), value):
                row[f"{key}_{axis}"] = round(v, 3) if isinstance(v, float) else v
        else:
            row[key] = round(value, 3) if isinstance(value, float) else value
    return row
