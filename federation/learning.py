"""Federated logistic regression: what a site computes on its own rows, and how the orchestrator merges.

Why this shape: every round's merge is an exact sum over sites, so the federated model is the
model a central fit on the union of the sites' rows would give, step for step — only sums of
the size of the model (and counts) leave a site, never a row.

The model: P(y=1 | x) = σ(w₀ + Σ wⱼ zⱼ), z = (x − mean) / sd with the *union's* mean and sd,
fitted by minimising the mean log-loss + λ/2 Σ_{j≥1} wⱼ² (the intercept is not penalised;
λ > 0 keeps the optimum unique even when the classes separate).

Round 1 (`standardisation`): each site sends `n`, `sum` and `sum_squares` of its features; the
merge gives the union's mean and (population) sd, and weights 0.

Rounds 2… are one optimisation step each, by `method`:
- `newton`: each site sends `n`, the *sum* of its log-loss gradients (d+1) and Hessians
  ((d+1)²) at the current weights; the merge takes the Newton step of the union's objective
  (quadratic convergence: a handful of rounds).
- `fedavg`: each site takes one full-batch gradient step from the current weights on its own
  rows and sends back its new `weights` and `n`; the merge averages them weighted by `n`,
  which is exactly the union's gradient step (only model weights and counts leave a site).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

STANDARDISATION = "standardisation"


def site_sums(rows: np.ndarray) -> dict[str, Any]:
    """Round 1 at a site: the count, sums and sums of squares of its feature rows (n × d)."""
    rows = np.asarray(rows, dtype=float).reshape(len(rows), -1)
    return {"n": int(rows.shape[0]), "sum": rows.sum(0).tolist(), "sum_squares": (rows**2).sum(0).tolist()}


def merge_standardisation(parts: Iterable[dict[str, Any]], features: int) -> dict[str, Any]:
    """The union's mean and sd (a constant feature gets sd 1) and the starting weights (zeros)."""
    parts = list(parts)
    n = sum(int(p["n"]) for p in parts)
    if n == 0:
        raise ValueError("no site has rows to learn from")
    total = np.sum([np.asarray(p["sum"], dtype=float) if p["n"] else np.zeros(features) for p in parts], axis=0)
    squares = np.sum([np.asarray(p["sum_squares"], dtype=float) if p["n"] else np.zeros(features) for p in parts], axis=0)
    mean = total / n
    sd = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    sd[sd < 1e-12] = 1.0
    return {"stage": STANDARDISATION, "n": n, "mean": mean.tolist(), "sd": sd.tolist(), "weights": [0.0] * (features + 1), "step": 0}


def design(rows: np.ndarray, mean: Sequence[float], sd: Sequence[float]) -> np.ndarray:
    """Standardised rows with a leading column of ones (the intercept)."""
    rows = np.asarray(rows, dtype=float).reshape(len(rows), -1)
    z = (rows - np.asarray(mean, dtype=float)) / np.asarray(sd, dtype=float)
    return np.column_stack([np.ones(len(z)), z])


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))  # stable for large |t|


def site_newton(rows: np.ndarray, labels: np.ndarray, model: dict[str, Any]) -> dict[str, Any]:
    """A Newton round at a site: n and the sums of log-loss gradients and Hessians at the model's weights."""
    x = design(rows, model["mean"], model["sd"])
    y = np.asarray(labels, dtype=float)
    p = _sigmoid(x @ np.asarray(model["weights"], dtype=float))
    gradient = x.T @ (p - y)
    hessian = (x * (p * (1 - p))[:, None]).T @ x
    return {"n": int(len(y)), "gradient": gradient.tolist(), "hessian": hessian.tolist()}


def _penalty(weights: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    mask = np.ones_like(weights)
    mask[0] = 0.0
    return l2 * mask * weights, l2 * np.diag(mask)


def merge_newton(parts: Iterable[dict[str, Any]], model: dict[str, Any], l2: float) -> dict[str, Any]:
    """The union's Newton step from the model's weights."""
    parts = [p for p in parts if p["n"]]
    n = sum(int(p["n"]) for p in parts)
    w = np.asarray(model["weights"], dtype=float)
    grad_pen, hess_pen = _penalty(w, l2)
    gradient = np.sum([np.asarray(p["gradient"], dtype=float) for p in parts], axis=0) / n + grad_pen
    hessian = np.sum([np.asarray(p["hessian"], dtype=float) for p in parts], axis=0) / n + hess_pen
    step = np.linalg.solve(hessian + 1e-12 * np.eye(len(w)), gradient)
    return {**model, "stage": "newton", "n": n, "weights": (w - step).tolist(), "step": int(model.get("step", 0)) + 1,
            "gradient_norm": float(np.linalg.norm(gradient))}


def site_fedavg(rows: np.ndarray, labels: np.ndarray, model: dict[str, Any], learning_rate: float, l2: float, total: int) -> dict[str, Any]:
    """A FedAvg round at a site: one full-batch gradient step on its own rows; only the new weights and n go back.

    The site's share of the penalty is scaled by n/total so the weighted average is the union's step.
    """
    x = design(rows, model["mean"], model["sd"])
    y = np.asarray(labels, dtype=float)
    w = np.asarray(model["weights"], dtype=float)
    if not len(y):
        return {"n": 0, "weights": w.tolist()}
    grad_pen, _ = _penalty(w, l2)
    gradient = x.T @ (_sigmoid(x @ w) - y) / len(y) + grad_pen
    return {"n": int(len(y)), "weights": (w - learning_rate * gradient).tolist()}


def merge_fedavg(parts: Iterable[dict[str, Any]], model: dict[str, Any]) -> dict[str, Any]:
    """The count-weighted average of the sites' weights."""
    parts = [p for p in parts if p["n"]]
    n = sum(int(p["n"]) for p in parts)
    weights = np.sum([np.asarray(p["weights"], dtype=float) * int(p["n"]) for p in parts], axis=0) / n
    return {**model, "stage": "fedavg", "n": n, "weights": weights.tolist(), "step": int(model.get("step", 0)) + 1}


def central_fit(rows: np.ndarray, labels: np.ndarray, l2: float, steps: int = 100) -> dict[str, Any]:
    """The same model fitted on all rows in one place (Newton to convergence): what the federated fit must reach."""
    model = merge_standardisation([site_sums(rows)], np.asarray(rows).reshape(len(rows), -1).shape[1])
    for _ in range(steps):
        model = merge_newton([site_newton(rows, labels, model)], model, l2)
        if model["gradient_norm"] < 1e-12:
            break
    return model


def predict(rows: np.ndarray, model: dict[str, Any]) -> np.ndarray:
    """P(y=1) for feature rows under a fitted model."""
    return _sigmoid(design(rows, model["mean"], model["sd"]) @ np.asarray(model["weights"], dtype=float))
