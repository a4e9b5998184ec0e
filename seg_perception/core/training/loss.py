"""Class-balanced cross entropy: per-class weights from the training pixel frequencies."""

from __future__ import annotations

from typing import Sequence

import numpy as np

WEIGHTINGS = ("isqrt", "median", "enet", "none")


def class_weights(freq: Sequence[float], mode: str = "isqrt", max_weight: float = 50.0) -> np.ndarray:
    """Weights for classes with pixel shares ``freq``.

    isqrt:  1/sqrt(f) (mild; rare classes get more weight without swamping road)
    median: median(f)/f (median frequency balancing, Eigen & Fergus)
    enet:   1/ln(1.02 + f) (ENet)
    none:   all 1
    Normalised so the pixel-weighted mean weight is 1 (the loss keeps its scale). A class absent
    from the data is weighted like the rarest present one; every weight is capped at
    ``max_weight``.
    """
    f = np.asarray(freq, np.float64)
    if mode not in WEIGHTINGS:
        raise ValueError(f"unknown class weighting {mode!r}; known: {list(WEIGHTINGS)}")
    if mode == "none":
        return np.ones_like(f)
    present = f > 0
    if not present.any():
        return np.ones_like(f)
    fp = np.where(present, f, f[present].min())
    if mode == "isqrt":
        w = 1.0 / np.sqrt(fp)
    elif mode == "median":
        w = np.median(f[present]) / fp
    else:
        w = 1.0 / np.log(1.02 + fp)
    w = w / float((w * np.where(present, f, 0.0)).sum() / f[present].sum())
    return np.minimum(w, max_weight)
