"""Federated metadata statistics: what one site computes on its own data, and how sites merge.

A site's statistics and the merged statistics have the same shape, and merging is a plain sum,
so the merge of all sites equals the statistics computed on the union of their data:

    {"sites": 1, "series": n, "instances": n, "unreadable_instances": n,
     "counts": {"Modality": {"CT": 3, ...}, "BodyPartExamined": {...}, "Manufacturer": {...}},
     "histogram_edges": [e0, e1, ...],
     "histograms": {"CT": {"counts": [...], "below": n, "above": n, "pixels": n}, ...}}

Counts are of series, by the value in the series' first instance (`(none)` when absent).
Histograms are of the stored values after the modality LUT (Hounsfield units for CT), one per
modality, with the bin edges fixed by the configuration (numpy's rule: every bin is half-open
but the last, which includes its right edge; `below`/`above` count values outside the edges).
Nothing else leaves a site: no UIDs, no names, no pixel data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

COUNTED = ("Modality", "BodyPartExamined", "Manufacturer")
NONE_VALUE = "(none)"


def empty(edges: Sequence[float]) -> dict[str, Any]:
    return {"sites": 1, "series": 0, "instances": 0, "unreadable_instances": 0, "counts": {field: {} for field in COUNTED},
            "histogram_edges": [float(e) for e in edges], "histograms": {}}


def add_series(stats: dict[str, Any], files: Iterable[Path], with_histograms: bool = True) -> None:
    """Add one series (its instance files) to a site's statistics."""
    import numpy as np
    import pydicom
    from pydicom.pixels import apply_modality_lut

    edges = np.asarray(stats["histogram_edges"], dtype=float)
    first = True
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=not with_histograms)
        if first:
            stats["series"] += 1
            for field in COUNTED:
                value = str(ds.get(field, "") or "").strip() or NONE_VALUE
                stats["counts"][field][value] = stats["counts"][field].get(value, 0) + 1
            first = False
        stats["instances"] += 1
        if not with_histograms:
            continue
        try:
            values = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=float).ravel()
        except Exception:  # no pixel data (SR, SEG without frames) or a syntax without a decoder
            stats["unreadable_instances"] += 1
            continue
        modality = str(ds.get("Modality", "") or "").strip() or NONE_VALUE
        histogram = stats["histograms"].setdefault(modality, {"counts": [0] * (len(edges) - 1), "below": 0, "above": 0, "pixels": 0})
        counts, _ = np.histogram(values, bins=edges)
        histogram["counts"] = [int(a + b) for a, b in zip(histogram["counts"], counts)]
        histogram["below"] += int((values < edges[0]).sum())
        histogram["above"] += int((values > edges[-1]).sum())
        histogram["pixels"] += int(values.size)


def merge(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The sum of sites' (or merged) statistics; refuses parts made with different bin edges."""
    parts = list(parts)
    if not parts:
        raise ValueError("no statistics to merge")
    edges = parts[0]["histogram_edges"]
    merged = empty(edges)
    merged["sites"] = 0
    for part in parts:
        if part["histogram_edges"] != edges:
            raise ValueError("the sites used different histogram bin edges; they cannot be merged exactly")
        for key in ("sites", "series", "instances", "unreadable_instances"):
            merged[key] += int(part.get(key, 0))
        for field in COUNTED:
            target = merged["counts"][field]
            for value, n in (part["counts"].get(field) or {}).items():
                target[value] = target.get(value, 0) + int(n)
        for modality, histogram in (part.get("histograms") or {}).items():
            into = merged["histograms"].setdefault(modality, {"counts": [0] * (len(edges) - 1), "below": 0, "above": 0, "pixels": 0})
            if len(histogram["counts"]) != len(into["counts"]):
                raise ValueError("a site's histogram does not fit the bin edges")
            into["counts"] = [a + int(b) for a, b in zip(into["counts"], histogram["counts"])]
            for key in ("below", "above", "pixels"):
                into[key] += int(histogram[key])
    for field in COUNTED:  # sorted keys: the same data gives the same document
        merged["counts"][field] = dict(sorted(merged["counts"][field].items()))
    merged["histograms"] = dict(sorted(merged["histograms"].items()))
    return merged
