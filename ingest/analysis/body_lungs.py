"""Body contour and lungs from a CT by HU thresholds, connected components and morphology; a head mask from an MR.

Why classical image processing: it runs in seconds on two cores with no model weights, and
on CT the physics does most of the work — air is −1000 HU, lung parenchyma about −850,
every other tissue above −200 — so thresholds plus topology (largest component, holes
filled slice by slice, air that touches the outside is not lung) are robust. MR has no
absolute scale, so the head is the largest Otsu foreground component with its holes filled.

All functions take and return SimpleITK images in patient geometry (from
`ingest.results_writeback.load_series_volume`); masks are UInt8 0/1 images on the same grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

BODY_HU = -500.0  # above: the patient (and the table); below: air (lung is inside, filled in)
LUNG_HU = -400.0  # below, inside the body: air-filled tissue (lungs, airways, bowel gas)
MIN_LUNG_ML = 10.0  # smaller air pockets (bowel gas, a slice of trachea) are not a lung


@dataclass(frozen=True)
class CtMasks:
    body: sitk.Image
    right_lung: sitk.Image
    left_lung: sitk.Image


def _largest_component(mask: sitk.Image) -> sitk.Image:
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.Cast(labels == 1, sitk.sitkUInt8)


def fill_holes_per_slice(mask: sitk.Image) -> sitk.Image:
    """Holes filled in each axial slice: a lung open to the volume's top or bottom is still inside the body.

    The slices are laid out as one tall 2-D mosaic, each followed by a background row that
    touches the image's left and right edges, so one 2-D fill (half the time of one call per
    slice) cannot connect a hole of one slice to another slice.
    """
    array = sitk.GetArrayViewFromImage(mask)
    slices, rows, columns = array.shape
    mosaic = np.zeros((slices, rows + 1, columns), dtype=np.uint8)
    mosaic[:, :rows] = array > 0
    filled = sitk.BinaryFillhole(sitk.GetImageFromArray(mosaic.reshape(slices * (rows + 1), columns)), fullyConnected=False, foregroundValue=1)
    result = np.ascontiguousarray(sitk.GetArrayViewFromImage(filled).reshape(slices, rows + 1, columns)[:, :rows])
    return _as_mask(result, mask)


def open_in_plane(mask: np.ndarray) -> np.ndarray:
    """A 3×3 in-plane binary opening (erosion then dilation) of a (slices, rows, columns) mask.

    Written with shifted array views because ITK's binary morphology takes several seconds
    per 100 slices of 512² on two cores, and this is a few array operations.
    """
    eroded = mask.copy()
    eroded[:, :1, :] = False
    eroded[:, -1:, :] = False
    eroded[:, :, :1] = False
    eroded[:, :, -1:] = False
    inner = eroded[:, 1:-1, 1:-1]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                inner &= mask[:, 1 + dy : mask.shape[1] - 1 + dy, 1 + dx : mask.shape[2] - 1 + dx]
    dilated = eroded.copy()
    core = dilated[:, 1:-1, 1:-1]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                core |= eroded[:, 1 + dy : mask.shape[1] - 1 + dy, 1 + dx : mask.shape[2] - 1 + dx]
    return dilated


def body_mask(ct: sitk.Image) -> sitk.Image:
    """The patient's body: tissue above −500 HU, opened to drop noise and thin table parts, largest component, holes filled."""
    tissue = open_in_plane(sitk.GetArrayViewFromImage(ct) > BODY_HU)
    return fill_holes_per_slice(_largest_component(_as_mask(tissue.view(np.uint8), ct)))


def lung_masks(ct: sitk.Image, body: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """Right and left lung: air inside the body, the two largest components big enough to be lungs, split by side.

    Patient right is −x in LPS. When both lungs form one component (touching at the
    mediastinum), it is split at the body's midline, in patient x (not by column: see `_patient_x`).
    """
    air = sitk.Cast((ct < LUNG_HU) & (body > 0), sitk.sitkUInt8)
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(air), sortByObjectSize=True)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.SetComputePerimeter(False)
    stats.Execute(labels)
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    big = [label for label in stats.GetLabels() if stats.GetNumberOfPixels(label) * voxel_ml >= MIN_LUNG_ML][:2]
    array = sitk.GetArrayViewFromImage(labels)
    right = np.zeros(array.shape, dtype=np.uint8)
    left = np.zeros(array.shape, dtype=np.uint8)
    if len(big) == 2:
        first, second = sorted(big, key=lambda label: stats.GetCentroid(label)[0])
        right[array == first], left[array == second] = 1, 1
    elif len(big) == 1:
        component = array == big[0]
        on_right = _patient_x(ct) < _midline_x(body)
        right[component & on_right] = 1
        left[component & ~on_right] = 1
    return _as_mask(right, ct), _as_mask(left, ct)


def _patient_x(image: sitk.Image) -> np.ndarray:
    """Each voxel's patient x (LPS mm), broadcastable to the (slices, rows, columns) array.

    Why not the column index: the image's row direction may point to the patient's right
    (feet-first scans, flipped or oblique orientations), so only patient x says which side is which.
    """
    columns, rows, slices = image.GetSize()
    d = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    sx, sy, sz = image.GetSpacing()
    x0 = float(image.GetOrigin()[0])
    return (x0 + d[0, 0] * sx * np.arange(columns)[None, None, :] + d[0, 1] * sy * np.arange(rows)[None, :, None]
            + d[0, 2] * sz * np.arange(slices)[:, None, None])


def _midline_x(body: sitk.Image) -> float:
    """The patient x of the body's centroid (where a single air component is split into two lungs)."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.SetComputePerimeter(False)
    stats.Execute(body)
    if 1 not in stats.GetLabels():
        size = body.GetSize()
        return float(body.TransformContinuousIndexToPhysicalPoint([(size[0] - 1) / 2, (size[1] - 1) / 2, (size[2] - 1) / 2])[0])
    return float(stats.GetCentroid(1)[0])


def _as_mask(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def segment_ct(ct: sitk.Image) -> CtMasks:
    body = body_mask(ct)
    right, left = lung_masks(ct, body)
    return CtMasks(body, right, left)


def head_mask(mr: sitk.Image) -> sitk.Image:
    """An MR's foreground: Otsu threshold of the log signal, largest component, holes filled slice by slice (the skull's dark rim is inside)."""
    smooth = sitk.SmoothingRecursiveGaussian(mr, float(min(mr.GetSpacing()[:2])))
    # Otsu on the log signal: background noise sits decades below every tissue, while on the linear scale
    # Otsu splits bright from dark tissue (T1: fat and white matter from skull and CSF) instead.
    logged = sitk.Log(sitk.Cast(smooth, sitk.sitkFloat32) + 1.0)
    foreground = sitk.OtsuThreshold(logged, 0, 1, 256)
    return fill_holes_per_slice(_largest_component(foreground))


def as_array(mask: sitk.Image) -> np.ndarray:
    """A mask as a bool (slices, rows, columns) array, the layout SEG frames use."""
    return sitk.GetArrayFromImage(mask).astype(bool)
