"""Agreement of two masks on the same image grid: Dice, Jaccard, Hausdorff 95 and volume difference.

Definitions (the usual ones, so scores compare with other tools):

- Dice = 2|A∩B| / (|A|+|B|); Jaccard = |A∩B| / |A∪B|; both 1.0 when both masks are empty.
- Hausdorff 95 (mm, symmetric) = max(P95 of the distances from A's surface voxels to the nearest
  surface voxel of B, P95 the other way) — MedPy's `hd95`. A surface voxel is a mask voxel with a
  face neighbour outside the mask (or at the volume's edge). Distances are between voxel centres
  in mm, from SimpleITK's Maurer distance map (exact Euclidean, with the image spacing).
  None when either mask is empty.
- Volume difference = volume(test) − volume(reference) in mL, and relative to the reference (%).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def surface(mask: np.ndarray) -> np.ndarray:
    """The mask's voxels that touch the outside through a face (6-connectivity)."""
    mask = mask.astype(bool)
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def _distances_to(target_surface: np.ndarray, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """For every voxel, the distance in mm to the nearest voxel of `target_surface`."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(target_surface.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.abs(sitk.GetArrayFromImage(distance))


def hausdorff95_mm(reference: np.ndarray, test: np.ndarray, spacing_xyz: tuple[float, float, float]) -> float | None:
    """The symmetric 95th-percentile Hausdorff distance in mm (see the module docstring)."""
    if not reference.any() or not test.any():
        return None
    a, b = surface(reference), surface(test)
    a_to_b = _distances_to(b, spacing_xyz)[a]
    b_to_a = _distances_to(a, spacing_xyz)[b]
    return float(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)))


def evaluate(reference: np.ndarray, test: np.ndarray, spacing_xyz: tuple[float, float, float]) -> dict[str, Any]:
    """All scores of `test` against `reference` (bool arrays of one shape)."""
    if reference.shape != test.shape:
        raise ValueError(f"the masks differ in shape ({reference.shape} and {test.shape}): they are not on the same image")
    reference, test = reference.astype(bool), test.astype(bool)
    ref_n, test_n = int(reference.sum()), int(test.sum())
    both = int(np.count_nonzero(reference & test))
    either = int(np.count_nonzero(reference | test))
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    return {
        "reference_voxels": ref_n, "test_voxels": test_n,
        "dice": 1.0 if ref_n + test_n == 0 else 2.0 * both / (ref_n + test_n),
        "jaccard": 1.0 if either == 0 else both / either,
        "hausdorff95_mm": hausdorff95_mm(reference, test, spacing_xyz),
        "reference_ml": ref_n * voxel_ml, "test_ml": test_n * voxel_ml,
        "volume_difference_ml": (test_n - ref_n) * voxel_ml,
        "volume_difference_percent": None if ref_n == 0 else 100.0 * (test_n - ref_n) / ref_n,
    }
