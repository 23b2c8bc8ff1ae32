"""IGTD, Image Generator for Tabular Data (Zhu et al., Sci Rep 11:11325, 2021): features placed
on the grid, one per pixel, so that the ranking of the distances between their pixels matches
the ranking of the distances between the features, by iterative swaps.

The features' pairwise distances (over the fit rows) and the pixels' are each ranked (ties
averaged, as scipy's `rankdata`) and divided by the number of pairs, so that a grid with more
pixels than features compares ranks on one scale; the error is the sum over feature pairs of
the absolute (or squared) difference of the two ranks. From the features in their given order,
each step takes the feature selected least recently, evaluates its swap with every other pixel
(a pixel with a feature: both move; an empty one: the feature moves), and makes the best swap if
it lowers the error. The run stops after `max_step` steps, or when the last `val_step` steps
lowered the error by less than `min_gain` of its value. One step is O(pixels x features) in a
parallel numba kernel in which each candidate is summed by one thread: the layout is the same
for any thread count.
"""

from __future__ import annotations

from numbers import Integral, Real

import numba
import numpy as np
from scipy.spatial.distance import pdist, squareform
from scipy.stats import rankdata
from sklearn.utils._param_validation import Interval, StrOptions

from textvision.deepinsight.base import (
    BASE_CONSTRAINTS,
    PixelMapTransformer,
    grid_positions,
    register_method,
)
from textvision.deepinsight.jit import numba_threads

FEATURE_DISTANCES = ("euclidean", "pearson")
PIXEL_DISTANCES = ("euclidean", "manhattan")
ERRORS = ("abs", "squared")

PARAMETER_CONSTRAINTS = {
    **BASE_CONSTRAINTS,
    "feature_distance": [StrOptions(set(FEATURE_DISTANCES))],
    "pixel_distance": [StrOptions(set(PIXEL_DISTANCES))],
    "error": [StrOptions(set(ERRORS))],
    "max_step": [Interval(Integral, 1, None, closed="left")],
    "val_step": [Interval(Integral, 1, None, closed="left")],
    "min_gain": [Interval(Real, 0, None, closed="left")],
}


@register_method("igtd")
class IGTDTransformer(PixelMapTransformer):
    """IGTD's layout (see the module docstring) with the base class's scaling and rendering.

    Parameters: `pixels`, `scaler`, `empty_value`, `layout`, `layout_seed`, `chunk_size`,
    `n_jobs` as `PixelMapTransformer`; `feature_distance` (`euclidean`, or `pearson`: 1 - r),
    `pixel_distance` (`euclidean`, `manhattan`), `error` (`abs`, `squared`), `max_step`,
    `val_step`, `min_gain` (IGTD's own names and meaning; defaults as its example runs).

    Fitted attributes, besides the base class's: `errors_` (the error before the first step
    and after each), `n_steps_`.
    """

    _STATE = ("errors_",)
    _parameter_constraints = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        pixels=50,
        scaler="log",
        *,
        feature_distance="euclidean",
        pixel_distance="euclidean",
        error="abs",
        max_step=30000,
        val_step=300,
        min_gain=1e-5,
        empty_value=0.0,
        layout="fitted",
        layout_seed=0,
        chunk_size=4096,
        n_jobs=None,
    ):
        self._set_shared(pixels, scaler, empty_value, layout, layout_seed, chunk_size, n_jobs)
        self.feature_distance = feature_distance
        self.pixel_distance = pixel_distance
        self.error = error
        self.max_step = max_step
        self.val_step = val_step
        self.min_gain = min_gain

    def _place(self, scaled: np.ndarray) -> np.ndarray:
        features = rank_matrix(feature_distances(scaled, self.feature_distance))
        grid = grid_positions(self.pixels)
        pixels = pixel_ranks(self.pixels, self.pixel_distance)
        slot = np.arange(scaled.shape[1], dtype=np.int64)  # the given order, row by row
        errors = np.empty(self.max_step + 1, dtype=np.float64)
        with numba_threads(self._threads()):
            steps = _igtd(
                slot, features, pixels, self.error == "squared", self.max_step, self.val_step,
                self.min_gain, errors,
            )  # fmt: skip
        self.errors_, self.n_steps_ = errors[: steps + 1], steps
        return grid[slot]


def feature_distances(scaled: np.ndarray, kind: str) -> np.ndarray:
    """Condensed pairwise distances between the features (columns of `scaled`)."""
    columns = np.ascontiguousarray(scaled.T, dtype=np.float64)
    if kind == "pearson":
        return pdist(columns, "correlation")  # 1 - Pearson's r
    return pdist(columns, "euclidean")


def rank_matrix(condensed: np.ndarray) -> np.ndarray:
    """Square float32 matrix of the ranks of condensed pairwise distances (ties averaged),
    divided by the number of pairs; zero on the diagonal."""
    ranks = rankdata(condensed) / len(condensed)
    return squareform(ranks.astype(np.float32))


def pixel_ranks(pixels: int, kind: str = "euclidean") -> np.ndarray:
    """`rank_matrix` of the distances between the pixels of a `pixels` x `pixels` grid, row by
    row (`kind`: `euclidean` or `manhattan`)."""
    metric = "cityblock" if kind == "manhattan" else "euclidean"
    return rank_matrix(pdist(grid_positions(pixels).astype(np.float64), metric))


def layout_error(slot: np.ndarray, features: np.ndarray, pixels: np.ndarray, squared: bool):
    """IGTD's error of features at pixels `slot`: the sum over feature pairs of the (squared)
    difference between their feature rank and their pixels' rank."""
    diff = features - pixels[np.ix_(slot, slot)]
    terms = diff * diff if squared else np.abs(diff)
    return float(np.triu(terms, 1).sum(dtype=np.float64))


@numba.njit(cache=True)
def _cost(r: float, q: float, squared: bool) -> float:
    d = r - q
    return d * d if squared else abs(d)


@numba.njit(parallel=True, cache=True)
def _swap_changes(i, slot, feature_at, features, pixels, squared, out):
    """`out[b]`: the change of the error if feature `i` swapped pixels with pixel `b`."""
    n, a = len(slot), slot[i]
    for b in numba.prange(len(feature_at)):
        j = feature_at[b]
        change = 0.0
        if b != a:
            for k in range(n):
                if k == i or k == j:  # noqa: SIM109 - plain comparisons in a numba kernel
                    continue
                p = slot[k]
                change += _cost(features[i, k], pixels[b, p], squared)
                change -= _cost(features[i, k], pixels[a, p], squared)
                if j >= 0:
                    change += _cost(features[j, k], pixels[a, p], squared)
                    change -= _cost(features[j, k], pixels[b, p], squared)
        out[b] = change


@numba.njit(cache=True)
def _error(slot, features, pixels, squared) -> float:
    total = 0.0
    for i in range(len(slot)):
        for k in range(i + 1, len(slot)):
            total += _cost(features[i, k], pixels[slot[i], slot[k]], squared)
    return total


@numba.njit(cache=True)
def _igtd(slot, features, pixels, squared, max_step, val_step, min_gain, errors) -> int:
    """IGTD's iterations on `slot` (feature -> pixel, updated in place); `errors[s]` is the
    error after step s. Returns the number of steps run."""
    n, m = len(slot), len(pixels)
    feature_at = np.full(m, -1, dtype=np.int64)
    for k in range(n):
        feature_at[slot[k]] = k
    last = np.full(n, -1, dtype=np.int64)  # the step each feature was last selected or moved
    change = np.empty(m, dtype=np.float64)
    errors[0] = _error(slot, features, pixels, squared)
    for step in range(1, max_step + 1):
        i = np.argmin(last)  # selected least recently; ties: the lowest index
        last[i] = step
        _swap_changes(i, slot, feature_at, features, pixels, squared, change)
        b = np.argmin(change)
        errors[step] = errors[step - 1]
        if change[b] < 0:
            a, j = slot[i], feature_at[b]
            slot[i], feature_at[b], feature_at[a] = b, i, j
            if j >= 0:
                slot[j] = a
                last[j] = step
            errors[step] += change[b]
        if step >= val_step and errors[step - val_step] - errors[step] < min_gain * abs(
            errors[step - val_step]
        ):
            return step
    return max_step
