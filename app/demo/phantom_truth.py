"""The ground truth of the demo phantoms that `phantoms.py` does not label: body, lungs, head.

Why a separate module: `phantoms.ct_torso` keeps only the abdominal organs as labels (what the
demo's SEGs show), and changing it would change the demo's output. Analysis DAGs
(segment-body-and-lungs) are checked against these masks instead. They are computed from
the phantom's own geometry, never from its voxel values: `ct_torso_truth` replays the same
random draws as `ct_torso` (the per-patient wobble of each organ) and paints the same
structures in the same order, so a lung voxel later covered by the heart or liver is not lung.
"""

from __future__ import annotations

import numpy as np

from app.demo.phantoms import Ellipsoid, Grid, Volume


def ct_grid(slices: int, size: int) -> Grid:
    """The grid `ct_torso` uses for these dimensions."""
    return Grid(size, size, 400 / size, slices, 6.0, 60.0)


def ct_torso_truth(seed: int, slices: int = 32, size: int = 192) -> dict[str, np.ndarray]:
    """Boolean (slice, row, column) masks of "body", "right lung" and "left lung" of `ct_torso(seed, …)`.

    Patient right is −x in LPS, so the lung centred at x = −85 mm is the right lung.
    """
    rng = np.random.default_rng(seed)
    draws = [float(rng.uniform(-6, 6)) for _ in range(7)]  # ct_torso's wobble, in its order: lungs, heart, liver, spleen, kidneys
    grid = ct_grid(slices, size)
    x, y = grid.plane()
    lungs = {"right lung": Ellipsoid((-85 + draws[0], -5, 45), (62, 70, 95), 0), "left lung": Ellipsoid((85 + draws[1], -5, 45), (60, 70, 95), 0)}
    later = [  # painted after the lungs in ct_torso, so they cover lung where they overlap
        Ellipsoid((20 + draws[2], -35, 5), (58, 48, 45), 0),
        Ellipsoid((-70 + draws[3], 5, -75), (80, 70, 70), 0),
        Ellipsoid((90 + draws[4], 45, -70), (32, 30, 45), 0),
        Ellipsoid((-72 + draws[5], 60, -125), (27, 32, 45), 0),
        Ellipsoid((72 + draws[6], 60, -120), (27, 32, 45), 0),
    ]
    body = ((x / 175) ** 2 + (y / 125) ** 2) < 1
    fixed = ((x - 12) ** 2 + (y - 45) ** 2 < 12**2) | ((x**2 + (y - 80) ** 2) < 19**2) | (((x / 24) ** 2 + ((y - 104) / 12) ** 2) < 1)
    truth = {name: np.zeros((slices, grid.rows, grid.columns), dtype=bool) for name in ("body", *lungs)}
    for k in range(slices):
        z = grid.z(k)
        covered = fixed.copy()
        for part in later:
            covered |= part.mask(x, y, z)
        truth["body"][k] = body
        for name, lung in lungs.items():
            truth[name][k] = lung.mask(x, y, z) & ~covered & body
    return truth


def mr_head_truth(slices: int = 20, size: int = 160) -> np.ndarray:
    """The head (the outermost shell, scalp included) of `mr_head(…, slices, size)` as a boolean (slice, row, column) mask."""
    grid = Grid(size, size, 240 / size, slices, 6.0, 60.0)
    x, y = grid.plane()
    outer = Ellipsoid((0, 0, 0), (76, 96, 82), 0)
    return np.stack([outer.mask(x, y, grid.z(k)) for k in range(slices)])


def check_replay(volume: Volume, truth: dict[str, np.ndarray]) -> float:
    """The mean value of the phantom inside the truth's lungs (≈ −850 HU when the replay matches the phantom)."""
    lungs = truth["right lung"] | truth["left lung"]
    return float(volume.values[lungs].mean())
