"""REFINED, REpresentation of Features as Images with NEighborhood Dependencies (Bazgir et al.,
Nat Commun 11:4391, 2020): an MDS start refined by hill climbing over pixel swaps.

The features' Euclidean distances (over the fit rows) are embedded in 2-D by metric MDS; each
axis is replaced by its ranks (REFINED's equalisation, which spreads the features evenly) and the
features are assigned one per pixel, optimally (REFINED assigns greedily). Hill climbing then
lowers REFINED's error, the normalised L2 distance between the features' distances and their
pixels' distances, `sqrt(sum((pixel_d - feature_d)²) / sum(feature_d²))` over feature pairs,
pixel distances in pixel units. Each iteration visits the pixels in nine interleaved lattices of
stride 3 (REFINED's schedule: the 3x3 neighbourhoods of one lattice do not overlap); for every
pixel of a lattice the best swap with one of its 8 neighbours is found against the same layout,
in parallel, and the swaps that lower the error are then made in order. Each candidate is summed
by one thread, so the layout is the same for any thread count. No MPI.
"""

from __future__ import annotations

from numbers import Integral

import numba
import numpy as np
from scipy.spatial.distance import squareform
from scipy.stats import rankdata
from sklearn.manifold import MDS
from sklearn.utils._param_validation import Interval

from textvision.deepinsight.base import (
    BASE_CONSTRAINTS,
    PixelMapTransformer,
    grid_positions,
    register_method,
)
from textvision.deepinsight.jit import numba_threads
from textvision.deepinsight.transformer import assign_coordinates

PARAMETER_CONSTRAINTS = {
    **BASE_CONSTRAINTS,
    "hc_iterations": [Interval(Integral, 0, None, closed="left")],
    "mds_max_iter": [Interval(Integral, 1, None, closed="left")],
    "random_state": [Interval(Integral, 0, None, closed="left")],
}
NEIGHBOURS = np.array(
    [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)], dtype=np.int64
)


@register_method("refined")
class REFINEDTransformer(PixelMapTransformer):
    """REFINED's layout (see the module docstring) with the base class's scaling and rendering.

    Parameters: `pixels`, `scaler`, `empty_value`, `layout`, `layout_seed`, `chunk_size`,
    `n_jobs` as `PixelMapTransformer`; `hc_iterations` (REFINED's hill-climbing iterations,
    its default 5), `mds_max_iter` (SMACOF iterations), `random_state` (seed of the MDS).

    Fitted attributes, besides the base class's: `embedding_` (the MDS positions),
    `errors_` (REFINED's error after the MDS start and after each iteration).
    """

    _STATE = ("embedding_", "errors_")
    _parameter_constraints = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        pixels=50,
        scaler="log",
        *,
        hc_iterations=5,
        mds_max_iter=300,
        random_state=0,
        empty_value=0.0,
        layout="fitted",
        layout_seed=0,
        chunk_size=4096,
        n_jobs=None,
    ):
        self._set_shared(pixels, scaler, empty_value, layout, layout_seed, chunk_size, n_jobs)
        self.hc_iterations = hc_iterations
        self.mds_max_iter = mds_max_iter
        self.random_state = random_state

    def _place(self, scaled: np.ndarray) -> np.ndarray:
        distances = euclidean_distances(scaled)
        mds = MDS(
            2,
            metric_mds=True,
            metric="precomputed",
            n_init=1,
            max_iter=self.mds_max_iter,
            random_state=self.random_state,
            init="random",
        )
        self.embedding_ = mds.fit_transform(distances.astype(np.float64))
        equalised = np.stack([rankdata(axis, "ordinal") for axis in self.embedding_.T], 1)
        start = assign_coordinates(equalised.astype(np.float64), self.pixels)
        p = self.pixels
        feature_at = np.full(p * p, -1, dtype=np.int64)
        feature_at[start[:, 0] * p + start[:, 1]] = np.arange(len(start))
        errors = np.empty(self.hc_iterations + 1, dtype=np.float64)
        with numba_threads(self._threads()):
            _hill_climb(feature_at, p, distances, self.hc_iterations, NEIGHBOURS, errors)
        self.errors_ = errors
        slot = np.empty(len(start), dtype=np.int64)
        used = np.flatnonzero(feature_at >= 0)
        slot[feature_at[used]] = used
        return grid_positions(p)[slot]


def euclidean_distances(scaled: np.ndarray) -> np.ndarray:
    """`[n_features, n_features]` float32 Euclidean distances between the columns of `scaled`
    (one matrix product in float64; zero on the diagonal)."""
    x = np.asarray(scaled, dtype=np.float64)
    norms = np.einsum("ij,ij->j", x, x)
    squared = norms[:, None] + norms[None, :] - 2 * (x.T @ x)
    np.fill_diagonal(squared, 0)
    return np.sqrt(np.maximum(squared, 0)).astype(np.float32)


def refined_error(pixels: np.ndarray, distances: np.ndarray) -> float:
    """REFINED's error of features at `pixels` (`[n, 2]` row, column) against their distances."""
    pixel_d = squareform(
        np.sqrt(((pixels[:, None, :] - pixels[None, :, :]) ** 2).sum(-1)), checks=False
    )
    feature_d = squareform(distances.astype(np.float64), checks=False)
    return float(np.sqrt(((pixel_d - feature_d) ** 2).sum() / (feature_d**2).sum()))


@numba.njit(cache=True)
def _pixel_distance(a: int, b: int, p: int) -> float:
    dr, dc = a // p - b // p, a % p - b % p
    return np.sqrt(dr * dr + dc * dc)


@numba.njit(cache=True)
def _squared_error(feature_at, p, distances) -> tuple[float, float]:
    """Sum over feature pairs of (pixel distance - feature distance)², and of feature distance²."""
    total, scale = 0.0, 0.0
    for a in range(len(feature_at)):
        i = feature_at[a]
        if i < 0:
            continue
        for b in range(a + 1, len(feature_at)):
            j = feature_at[b]
            if j < 0:
                continue
            d = _pixel_distance(a, b, p) - distances[i, j]
            total += d * d
            scale += distances[i, j] * distances[i, j]
    return total, scale


@numba.njit(cache=True)
def _swap_change(a, b, feature_at, p, distances) -> float:
    """Change of the squared error if pixels `a` and `b` exchanged their features."""
    i, j = feature_at[a], feature_at[b]
    if i < 0 and j < 0:
        return 0.0
    change = 0.0
    for c in range(len(feature_at)):
        k = feature_at[c]
        if k < 0 or c == a or c == b:  # noqa: SIM109 - plain comparisons in a numba kernel
            continue
        da, db = _pixel_distance(a, c, p), _pixel_distance(b, c, p)
        if i >= 0:
            change += (db - distances[i, k]) ** 2 - (da - distances[i, k]) ** 2
        if j >= 0:
            change += (da - distances[j, k]) ** 2 - (db - distances[j, k]) ** 2
    return change


@numba.njit(parallel=True, cache=True)
def _best_swaps(centres, feature_at, p, distances, neighbours, best, gain):
    """For each centre pixel, its neighbour whose swap lowers the squared error most."""
    for t in numba.prange(len(centres)):
        a = centres[t]
        best[t], gain[t] = -1, 0.0
        for n in range(len(neighbours)):
            r, c = a // p + neighbours[n, 0], a % p + neighbours[n, 1]
            if r < 0 or c < 0 or r >= p or c >= p:
                continue
            change = _swap_change(a, r * p + c, feature_at, p, distances)
            if change < gain[t]:
                best[t], gain[t] = r * p + c, change


@numba.njit(cache=True)
def _hill_climb(feature_at, p, distances, iterations, neighbours, errors) -> None:
    """REFINED's hill climbing on `feature_at` (pixel -> feature or -1, updated in place);
    `errors[0]` the start's error, `errors[it]` the error after iteration `it`."""
    total, scale = _squared_error(feature_at, p, distances)
    errors[0] = np.sqrt(total / scale)
    centres = np.empty(p * p, dtype=np.int64)
    best = np.empty(p * p, dtype=np.int64)
    gain = np.empty(p * p, dtype=np.float64)
    for it in range(1, iterations + 1):
        for r0 in range(3):
            for c0 in range(3):
                m = 0
                for r in range(r0, p, 3):
                    for c in range(c0, p, 3):
                        centres[m] = r * p + c
                        m += 1
                _best_swaps(centres[:m], feature_at, p, distances, neighbours, best, gain)
                for t in range(m):
                    if best[t] >= 0:
                        a, b = centres[t], best[t]
                        feature_at[a], feature_at[b] = feature_at[b], feature_at[a]
        total, _ = _squared_error(feature_at, p, distances)
        errors[it] = np.sqrt(total / scale)
