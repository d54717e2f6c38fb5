"""How large an import may get: bytes an upload unpacks to, voxels of one NIfTI image.

An upload comes from anyone with a login, and a few hundred kilobytes can claim gigabytes
(a zip of zeros, a `.nii.gz` whose header announces 10^10 voxels). Import jobs run in job
processes, which learn these limits from their environment: Vireo puts its settings there
at start (`app/server.py`), so `--import-max-unpacked-bytes` reaches them as well as the
variable does. On a Dask cluster, set the variables in the workers' environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

UNPACKED_BYTES_VARIABLE = "VIREO_IMPORT_MAX_UNPACKED_BYTES"
NIFTI_VOXELS_VARIABLE = "VIREO_NIFTI_MAX_VOXELS"
DEFAULT_UNPACKED_BYTES = 200 * 1024**3
DEFAULT_NIFTI_VOXELS = 2**28  # 512 x 512 x 1024: a thin-sliced whole-body CT; as float, ~1 GiB before conversion copies it


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        return default  # Vireo itself refuses to start with such a value; a stray job process keeps the default
    return value if value > 0 else default


def unpacked_bytes_limit(environ: Mapping[str, str] | None = None) -> int:
    """Most bytes one upload may unpack to (a zip's entries together)."""
    return _positive(os.environ if environ is None else environ, UNPACKED_BYTES_VARIABLE, DEFAULT_UNPACKED_BYTES)


def nifti_voxel_limit(environ: Mapping[str, str] | None = None) -> int:
    """Most voxels one NIfTI image (or label map) may have."""
    return _positive(os.environ if environ is None else environ, NIFTI_VOXELS_VARIABLE, DEFAULT_NIFTI_VOXELS)


def as_environment(unpacked_bytes: int, nifti_voxels: int) -> dict[str, str]:
    """The variables that carry these limits to job processes."""
    return {UNPACKED_BYTES_VARIABLE: str(unpacked_bytes), NIFTI_VOXELS_VARIABLE: str(nifti_voxels)}
