"""t-SNE with scikit-learn's settings (`sklearn.manifold.TSNE`, Barnes-Hut method): its sparse
affinities, PCA start, learning rate, two-phase schedule and stopping rules, optimised on the
exact gradient, computed by a parallel numba kernel. Each iteration is O(N^2) in the N points,
which for DeepInsight's few thousand features is faster than a Barnes-Hut tree and exact."""

from __future__ import annotations

from numbers import Integral, Real

import numba
import numpy as np
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.utils._param_validation import Interval, StrOptions

from textvision.deepinsight.jit import numba_threads
from textvision.deepinsight.params import validate_params

EXPLORATION_ITER = 250  # scikit-learn's early-exaggeration phase (iterations, momentum 0.5)
CHECK_EVERY = 50  # iterations between checks of the error and gradient norm
N_ITER_WITHOUT_PROGRESS = 300
MIN_GRAD_NORM = 1e-7
MIN_GAIN = 0.01

# the allowed values of `tsne`'s settings (the `deepinsight.tsne` config keys, `seed` as
# `random_state`; tests/test_defaults.py holds them and the defaults equal to the schema)
TSNE_CONSTRAINTS = {
    "perplexity": [Interval(Real, 0, None, closed="neither")],
    "early_exaggeration": [Interval(Real, 1, None, closed="left")],
    "metric": [StrOptions({"euclidean", "cosine"})],
    "init": [StrOptions({"pca", "random"})],
    "learning_rate": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
    "max_iter": [Interval(Integral, EXPLORATION_ITER, None, closed="left")],
    "random_state": [Interval(Integral, 0, None, closed="left")],
    "n_jobs": [Integral, None],
}


@validate_params(TSNE_CONSTRAINTS)
def tsne(
    points: np.ndarray,
    *,
    perplexity: float = 30,
    early_exaggeration: float = 12.0,
    metric: str = "euclidean",
    init: str = "pca",
    learning_rate="auto",
    max_iter: int = 1000,
    random_state: int = 0,
    n_jobs: int | None = None,
) -> np.ndarray:
    """`[N, 2]` t-SNE layout of the rows of `points`, as `sklearn.manifold.TSNE` with the same
    arguments computes it, except that the gradient is exact instead of Barnes-Hut's (angle
    0.5) approximation.

    Args:
        points: `[N, dims]` points (DeepInsight: the features, rows of the transposed matrix).
        perplexity: below N; about the number of neighbours each point keeps close.
        early_exaggeration: how much tighter neighbours are held during the first
            `EXPLORATION_ITER` iterations.
        metric: `euclidean` (squared distances, as scikit-learn) or `cosine`.
        init: `pca` (scikit-learn's PCA start) or `random`.
        learning_rate: `auto` (`max(N / early_exaggeration / 4, 50)`) or a number.
        max_iter: iterations, at least `EXPLORATION_ITER`.
        random_state: seed of the `random` start (the `pca` start is deterministic).
        n_jobs: numba threads (None: numba's default); the result is the same for any number.

    Allowed values: `TSNE_CONSTRAINTS`, checked on every call."""
    points = np.asarray(points, dtype=np.float32)  # no copy of a transposed view: BLAS takes it
    # one product of the points with themselves gives the cosine neighbours and the PCA start
    gram = points @ points.T if metric == "cosine" or init == "pca" else None
    P = affinities(points, perplexity, metric, gram)
    layout = initial_layout(points, init, random_state, gram)
    rate = resolve_learning_rate(len(points), learning_rate, early_exaggeration)
    with numba_threads(n_jobs):
        it = descend(
            layout, P, rate, early_exaggeration, 0.5, 0, EXPLORATION_ITER, EXPLORATION_ITER
        )
        if max_iter > EXPLORATION_ITER:
            descend(layout, P, rate, 1.0, 0.8, it + 1, max_iter, N_ITER_WITHOUT_PROGRESS)
    return layout.astype(np.float64)


def descend(
    layout: np.ndarray,
    P: sparse.csr_matrix,
    learning_rate: float,
    exaggeration: float,
    momentum: float,
    start: int,
    stop: int,
    patience: int,
) -> int:
    """scikit-learn's `_gradient_descent` on `layout` in place (delta-bar-delta gains, momentum,
    a check every 50 iterations: stop when the error has not improved for `patience`
    iterations or the gradient norm is below 1e-7); returns the last iteration."""
    update = np.zeros_like(layout)
    gains = np.ones_like(layout)
    grad = np.empty_like(layout)
    best_error, best_iter = np.inf, start
    indptr, indices = P.indptr.astype(np.int64), P.indices.astype(np.int64)
    values = P.data.astype(np.float32) * np.float32(exaggeration)
    i = start
    for i in range(start, stop):
        check = (i + 1) % CHECK_EVERY == 0
        y0, y1 = layout[:, 0].copy(), layout[:, 1].copy()
        error = kl_gradient(y0, y1, indptr, indices, values, grad, check)
        increase = update * grad < 0.0
        gains[increase] += 0.2
        gains[~increase] *= 0.8
        np.clip(gains, MIN_GAIN, np.inf, out=gains)
        grad *= gains
        update = momentum * update - learning_rate * grad
        layout += update
        if check:
            if error < best_error:
                best_error, best_iter = error, i
            elif i - best_iter > patience:
                break
            if np.linalg.norm(grad) <= MIN_GRAD_NORM:
                break
    return i


def kl_gradient(y0, y1, indptr, indices, values, grad, with_error):
    """Exact t-SNE gradient into `grad` (`[N, 2]`, float32) and the KL divergence, for the
    layout's coordinates `y0`, `y1` and the (exaggerated) affinities `P` as CSR arrays:
    `4 (sum_j P_ij w_ij (y_i - y_j) - sum_j w_ij^2 (y_i - y_j) / Z)`, `w_ij = 1 / (1 + d_ij^2)`,
    `Z = sum_(i != j) w_ij`; the divergence only `with_error` (else 0). Each point's sums run on
    one thread (the repulsion's in fixed point, whose sum has no order) and the sums over points
    are numpy's, outside the parallel kernels, so the result depends neither on the number of
    threads nor on their scheduling."""
    partial = np.empty(len(y0), np.float64)
    _repulsion(y0, y1, grad, partial)
    Z = partial.sum()
    _attraction(y0, y1, indptr, indices, values, grad, with_error, Z, partial)
    return partial.sum()


# The repulsion sums run in 64-bit fixed point: integer addition is associative, so the compiler
# vectorises them (float sums it may not reorder without fast-math) and every order, vector
# width, thread count and compilation gives the same bits. A term is truncated at 2^-32 (w) and
# 2^-40 (w^2 d, at most 0.33 in size): far below float32's resolution of the sums.
_W_SCALE = np.float32(2.0**32)
_F_SCALE = np.float32(2.0**40)


@numba.njit(parallel=True, cache=True)
def _repulsion(y0, y1, grad, partial):
    """Per point i: `sum_j w_ij^2 (y_i - y_j)` into `grad[i]`, `sum_(j != i) w_ij` into
    `partial[i]`."""
    n = len(y0)
    one = np.float32(1.0)
    for i in numba.prange(n):
        a, b = y0[i], y1[i]
        fx = fy = z = np.int64(0)
        for j in range(n):
            dx, dy = a - y0[j], b - y1[j]
            w = one / (one + dx * dx + dy * dy)
            z += np.int64(w * _W_SCALE)
            fx += np.int64(w * w * dx * _F_SCALE)
            fy += np.int64(w * w * dy * _F_SCALE)
        partial[i] = z / np.float64(_W_SCALE) - 1.0  # without j == i (w = 1)
        grad[i, 0] = fx / np.float64(_F_SCALE)
        grad[i, 1] = fy / np.float64(_F_SCALE)


@numba.njit(parallel=True, cache=True)
def _attraction(y0, y1, indptr, indices, values, grad, with_error, Z, partial):
    """Per point i: the gradient from `grad[i]` (its repulsion) and its attraction; its share
    of the KL divergence into `partial[i]` (0 unless `with_error`)."""
    one = np.float32(1.0)
    for i in numba.prange(len(y0)):
        a, b = y0[i], y1[i]
        px = py = np.float32(0.0)
        kl = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            dx, dy = a - y0[indices[k]], b - y1[indices[k]]
            w = one / (one + dx * dx + dy * dy)
            p = values[k]
            px += p * w * dx
            py += p * w * dy
            if with_error:
                kl += p * np.log(max(p, 1e-30) / max(w / Z, 1e-30))
        grad[i, 0] = 4.0 * (px - grad[i, 0] / Z)
        grad[i, 1] = 4.0 * (py - grad[i, 1] / Z)
        partial[i] = kl


def affinities(
    points: np.ndarray, perplexity: float, metric: str, gram: np.ndarray | None = None
) -> sparse.csr_matrix:
    """scikit-learn's Barnes-Hut t-SNE input: exact `3 * perplexity + 1` nearest neighbours,
    `exp(-d * beta_i)` calibrated to the perplexity (d squared for euclidean, the plain distance
    for other metrics), symmetrised and normalised to sum 1. For the cosine metric the
    distances come from `gram` (`points @ points.T`, float32 as scikit-learn computes them),
    points of zero norm at distance 1 from all, as in scikit-learn."""
    n = len(points)
    k = min(n - 1, int(3.0 * perplexity + 1))
    if metric == "cosine":
        gram = points @ points.T if gram is None else gram
        norms = np.sqrt(np.maximum(np.diagonal(gram), 0)).astype(np.float32)
        norms[norms == 0] = 1.0
        distances = 1.0 - gram / norms[:, None] / norms[None, :]
        np.clip(distances, 0.0, 2.0, out=distances)
        np.fill_diagonal(distances, np.inf)  # a point is not its own neighbour
        neighbors = np.argpartition(distances, k - 1, axis=1)[:, :k]
        distances = np.take_along_axis(distances, neighbors, axis=1)
    else:
        from sklearn.neighbors import NearestNeighbors

        distances, neighbors = (
            NearestNeighbors(n_neighbors=k, metric=metric).fit(points).kneighbors()
        )
    distances = distances.astype(np.float64)
    if metric == "euclidean":
        distances **= 2
    conditional = perplexity_probabilities(distances, perplexity)
    P = sparse.csr_matrix(
        (conditional.ravel(), neighbors.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n)
    )
    P = P + P.T
    P /= max(P.sum(), np.finfo(np.double).eps)
    return P.tocsr()


def initial_layout(
    points: np.ndarray, init: str, random_state, gram: np.ndarray | None = None
) -> np.ndarray:
    """scikit-learn's start: the first two principal components scaled to a first-axis std of
    1e-4 (signs as scikit-learn's PCA sets them), or N(0, 1e-4^2). With `gram`
    (`points @ points.T`) the components come from its centred eigenvectors, exactly, instead
    of scikit-learn's randomized SVD of the centred points."""
    from sklearn.utils import check_random_state

    if init == "random":
        rng = check_random_state(random_state)
        return 1e-4 * rng.standard_normal((len(points), 2)).astype(np.float32)
    if init != "pca":
        raise ValueError(f"init must be 'pca' or 'random', got {init!r}")
    if gram is None:
        start = PCA(2, svd_solver="randomized", random_state=random_state).fit_transform(points)
        return start.astype(np.float32) / np.std(start[:, 0]) * 1e-4
    from scipy.sparse.linalg import eigsh

    inner = gram.astype(np.float64)
    row = inner.mean(axis=1)
    inner -= row[:, None]
    inner -= row[None, :]
    inner += row.mean()  # (x_i - mean) . (x_j - mean)
    start_vector = np.random.default_rng(0).standard_normal(len(inner))  # deterministic
    values, vectors = eigsh(inner, k=2, which="LA", v0=start_vector, tol=0)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    start = vectors * np.sqrt(np.maximum(values, 0))
    # scikit-learn's svd_flip(u_based_decision=False): each component's largest loading > 0
    loadings = points.T @ vectors.astype(np.float32)
    loadings -= np.outer(points.mean(axis=0), vectors.sum(axis=0))
    signs = np.sign(loadings[np.abs(loadings).argmax(axis=0), [0, 1]])
    start = (start * np.where(signs == 0, 1, signs)).astype(np.float32)
    return start / np.std(start[:, 0]) * 1e-4


def resolve_learning_rate(n: int, learning_rate, early_exaggeration: float) -> float:
    """scikit-learn's learning rate ("auto": `max(N / early_exaggeration / 4, 50)`)."""
    if learning_rate == "auto":
        return max(n / early_exaggeration / 4, 50.0)
    return float(learning_rate)


def perplexity_probabilities(
    distances: np.ndarray, perplexity: float, steps: int = 100, tol: float = 1e-5
) -> np.ndarray:
    """Row-wise `exp(-d * beta_i)`, normalised, with `beta_i` bisected until the entropy is
    `log(perplexity)` (scikit-learn's `_binary_search_perplexity`, vectorised over rows)."""
    d = np.asarray(distances, dtype=np.float64)
    n = len(d)
    beta = np.ones(n)
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    target = np.log(perplexity)
    active = np.ones(n, dtype=bool)
    P = np.empty_like(d)
    for _ in range(steps):
        rows = np.flatnonzero(active)
        if not len(rows):
            break
        p = np.exp(-d[rows] * beta[rows, None])
        total = p.sum(axis=1)
        total[total == 0.0] = 1e-8
        p /= total[:, None]
        entropy = np.log(total) + beta[rows] * (d[rows] * p).sum(axis=1)
        P[rows] = p
        diff = entropy - target
        done = np.abs(diff) <= tol
        up = ~done & (diff > 0)
        down = ~done & (diff <= 0)
        r, b = rows[up], beta[rows[up]]
        lo[r] = b
        beta[r] = np.where(np.isinf(hi[r]), b * 2.0, (b + hi[r]) / 2.0)
        r, b = rows[down], beta[rows[down]]
        hi[r] = b
        beta[r] = np.where(np.isinf(lo[r]), b / 2.0, (b + lo[r]) / 2.0)
        active[rows[done]] = False
    return P
