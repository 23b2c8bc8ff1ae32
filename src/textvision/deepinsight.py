"""DeepInsight (Sharma et al., 2019) as a scikit-learn transformer: feature vectors -> images.

Features are points: a 2-D projection of the transposed (scaled) matrix places every feature,
the convex hull's minimum-area bounding rectangle is rotated axis-parallel, and positions are
discretised onto a P x P grid, by binning (DeepInsight, pyDeepInsight `bin`) or by an optimal
one-to-one assignment of features to pixel centres. A sample's image holds, in each pixel, the
mean of its scaled features that landed there.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.spatial import ConvexHull
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA, KernelPCA
from sklearn.utils.validation import check_array, check_is_fitted

SCALERS = ("log", "minmax", "zscore", "none")
PROJECTORS = ("tsne", "pca", "kpca")
DISCRETIZATIONS = ("bin", "assignment")
BLOCK_ROWS = 64  # rows scaled and binned at a time (at most chunk_size): the block stays in cache


class DeepInsightTransformer(TransformerMixin, BaseEstimator):
    """Map `[n_samples, n_features]` vectors to `[n_samples, pixels, pixels]` float32 images.

    Fitted attributes: `scale_` (scaler statistics), `embedding_` (2-D feature positions),
    `rotation_` (2x2), `coords_` (rotated positions), `pixels_` (`[n_features, 2]` row and
    column of every feature), `feature_counts_` (`[P, P]` features per pixel), `occupancy_`.
    """

    def __init__(
        self,
        pixels=50,
        scaler="log",
        projector="tsne",
        *,
        perplexity=30.0,
        metric="euclidean",
        init="pca",
        learning_rate="auto",
        max_iter=1000,
        backend="sklearn",
        pca_components=None,
        discretization="bin",
        empty_value=0.0,
        random_state=0,
        chunk_size=4096,
    ):
        self.pixels = pixels
        self.scaler = scaler
        self.projector = projector
        self.perplexity = perplexity
        self.metric = metric
        self.init = init
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.backend = backend
        self.pca_components = pca_components
        self.discretization = discretization
        self.empty_value = empty_value
        self.random_state = random_state
        self.chunk_size = chunk_size

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None):
        self._check_params()
        X = check_array(X, dtype=np.float32)
        self.n_features_in_ = X.shape[1]
        if self.scaler == "log":  # statistics and scaled rows from one logarithm pass
            self.scale_, scaled = _fit_log_scaler(X)
        else:
            self.scale_ = fit_scaler(X, self.scaler)
            scaled = apply_scaler(X, self.scaler, self.scale_)
        self.embedding_ = self._project(scaled.T)
        self.rotation_ = min_area_rotation(self.embedding_)
        self.coords_ = self.embedding_ @ self.rotation_.T
        if self.discretization == "bin":
            self.pixels_ = bin_coordinates(self.coords_, self.pixels)
        else:
            self.pixels_ = assign_coordinates(self.coords_, self.pixels)
        self.feature_counts_ = feature_counts(self.pixels_, self.pixels)
        self._build_matrix()
        return self

    def _check_params(self):
        for name, allowed in (
            ("scaler", SCALERS),
            ("projector", PROJECTORS),
            ("discretization", DISCRETIZATIONS),
            ("backend", BACKENDS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not isinstance(self.pixels, (int, np.integer)) or self.pixels < 2:
            raise ValueError(f"pixels must be an integer >= 2, got {self.pixels!r}")

    def _project(self, points: np.ndarray) -> np.ndarray:
        """2-D positions of the features (rows of `points`)."""
        if self.pca_components and self.pca_components < min(points.shape):
            points = PCA(self.pca_components, random_state=self.random_state).fit_transform(points)
        if self.projector == "pca":
            return PCA(2, random_state=self.random_state).fit_transform(points).astype(np.float64)
        if self.projector == "kpca":
            return KernelPCA(2, kernel="rbf", random_state=self.random_state).fit_transform(points)
        if self.perplexity >= len(points):
            raise ValueError(
                f"t-SNE perplexity ({self.perplexity}) must be below the number of features "
                f"({len(points)})"
            )
        if self.backend == "opentsne":
            return tsne_opentsne(
                points,
                perplexity=self.perplexity,
                metric=self.metric,
                init=self.init,
                learning_rate=self.learning_rate,
                max_iter=self.max_iter,
                random_state=self.random_state,
            )
        from sklearn.manifold import TSNE

        tsne = TSNE(
            2,
            perplexity=self.perplexity,
            metric=self.metric,
            init=self.init,
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            random_state=self.random_state,
        )
        return tsne.fit_transform(points).astype(np.float64)

    def _build_matrix(self):
        """Gather plan for `transform`. Pixels are grouped by their number `c` of features;
        `_gather` lists the features group after group, each group slot-major (every pixel's
        first feature, then every pixel's second, ...), so a pixel's mean is a sum over `c`
        contiguous slabs of the gathered row, times `1/c`."""
        flat = self.pixels_[:, 0] * self.pixels + self.pixels_[:, 1]
        counts = self.feature_counts_.ravel()
        order = np.argsort(flat, kind="stable")
        sorted_flat = flat[order]
        starts = np.flatnonzero(np.r_[True, sorted_flat[1:] != sorted_flat[:-1]])
        used = sorted_flat[starts]
        gather, pixels, self._spans = [], [], []
        at_gather = at_pixel = 0
        for c in np.unique(counts[used]):
            pick = counts[used] == c
            members = order[starts[pick][:, None] + np.arange(c)]  # [pixels, c] features
            gather.append(members.T.ravel())
            pixels.append(used[pick])
            self._spans.append((int(c), int(pick.sum()), at_gather, at_pixel))
            at_gather, at_pixel = at_gather + members.size, at_pixel + int(pick.sum())
        self._gather = np.concatenate(gather) if gather else np.zeros(0, np.int64)
        self._pixel_index = np.concatenate(pixels) if pixels else np.zeros(0, np.int64)
        self._inverse = (1.0 / counts[self._pixel_index]).astype(np.float32)

    @property
    def occupancy_(self) -> dict:
        check_is_fitted(self, "pixels_")
        return occupancy(self.feature_counts_)

    # -- transforming ----------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        check_is_fitted(self, "pixels_")
        X = check_array(X, dtype=np.float32)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, the mapping was fitted on {self.n_features_in_}"
            )
        if not hasattr(self, "_gather"):
            self._build_matrix()
        out = np.empty((len(X), self.pixels, self.pixels), dtype=np.float32)
        flat = out.reshape(len(X), -1)
        step = max(1, min(self.chunk_size, BLOCK_ROWS))
        means = np.empty((min(step, len(X)), len(self._pixel_index)), dtype=np.float32)
        for lo in range(0, len(X), step):
            block = apply_scaler(X[lo : lo + step], self.scaler, self.scale_)
            rows = len(block)
            gathered = block.take(self._gather, axis=1)
            mean = means[:rows]
            for c, n, at_gather, at_pixel in self._spans:
                slabs = gathered[:, at_gather : at_gather + c * n]
                if c == 1:
                    mean[:, at_pixel : at_pixel + n] = slabs
                else:
                    np.sum(slabs.reshape(rows, c, n), axis=1, out=mean[:, at_pixel : at_pixel + n])
            mean *= self._inverse
            dst = flat[lo : lo + rows]
            dst.fill(self.empty_value)  # then every used pixel is overwritten
            dst[:, self._pixel_index] = mean
        return out

    def inverse_transform(self, images) -> np.ndarray:
        """Images -> feature vectors (each feature reads its pixel; the scaler is undone)."""
        check_is_fitted(self, "pixels_")
        images = np.asarray(images, dtype=np.float32)
        if images.shape[-2:] != (self.pixels, self.pixels):
            raise ValueError(
                f"expected images [..., {self.pixels}, {self.pixels}], got {images.shape}"
            )
        values = images[..., self.pixels_[:, 0], self.pixels_[:, 1]]
        return invert_scaler(values, self.scaler, self.scale_)

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in ("_gather", "_pixel_index", "_inverse", "_spans"):
            state.pop(name, None)
        return state


def feature_counts(pixels: np.ndarray, size: int) -> np.ndarray:
    """`[size, size]` number of features in each pixel, from their `[n, 2]` pixel coordinates."""
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (pixels[:, 0], pixels[:, 1]), 1)
    return counts


def occupancy(counts: np.ndarray) -> dict:
    """How a discretisation uses the grid: pixels used, most and mean features per used pixel."""
    return {
        "pixels_used": int((counts > 0).sum()),
        "pixels_total": int(counts.size),
        "max_features_per_pixel": int(counts.max()),
        "mean_features_per_used_pixel": float(counts[counts > 0].mean()),
        "n_features": int(counts.sum()),
    }


# -- t-SNE with scikit-learn's settings, faster optimisers ---------------------------------------
EXPLORATION_ITER = 250  # scikit-learn's early-exaggeration phase (iterations, momentum 0.5)
EARLY_EXAGGERATION = 12.0
BACKENDS = ("sklearn", "opentsne")


def tsne_affinities(
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


def tsne_init(
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


def tsne_learning_rate(n: int, learning_rate) -> float:
    """scikit-learn's learning rate ("auto": `max(N / early_exaggeration / 4, 50)`)."""
    if learning_rate == "auto":
        return max(n / EARLY_EXAGGERATION / 4, 50.0)
    return float(learning_rate)


def _check_iterations(max_iter: int) -> None:
    if max_iter < EXPLORATION_ITER:
        raise ValueError(f"max_iter must be at least {EXPLORATION_ITER}, got {max_iter}")


def tsne_opentsne(
    points: np.ndarray,
    *,
    perplexity: float = 30.0,
    metric: str = "euclidean",
    init: str = "pca",
    learning_rate="auto",
    max_iter: int = 1000,
    random_state=0,
    n_jobs: int = -1,
) -> np.ndarray:
    """2-D t-SNE of the rows of `points` with `sklearn.manifold.TSNE`'s settings (Barnes-Hut,
    angle 0.5), optimised by openTSNE: scikit-learn's affinities (`tsne_affinities`), start
    (`tsne_init`), learning rate (times 4 in openTSNE's gradient convention) and schedule (early
    exaggeration 12 with momentum 0.5 for 250 iterations, then momentum 0.8, `max_iter`
    iterations in all)."""
    from openTSNE import TSNEEmbedding
    from openTSNE.affinity import Affinities

    _check_iterations(max_iter)
    points = np.ascontiguousarray(points, dtype=np.float32)
    # one product of the points with themselves gives the cosine neighbours and the PCA start
    gram = points @ points.T if metric == "cosine" or init == "pca" else None
    affinities = Affinities()
    affinities.P = tsne_affinities(points, perplexity, metric, gram)
    embedding = TSNEEmbedding(
        tsne_init(points, init, random_state, gram).astype(np.float64),
        affinities,
        negative_gradient_method="bh",
        theta=0.5,
        n_jobs=n_jobs,
        random_state=random_state,
    )
    rate = 4 * tsne_learning_rate(len(points), learning_rate)
    for n_iter, exaggeration, momentum in (
        (EXPLORATION_ITER, EARLY_EXAGGERATION, 0.5),
        (max_iter - EXPLORATION_ITER, None, 0.8),
    ):
        if n_iter:
            embedding.optimizer.gains = embedding.optimizer.update = None  # afresh, as sklearn
            embedding = embedding.optimize(
                n_iter,
                exaggeration=exaggeration,
                momentum=momentum,
                learning_rate=rate,
                max_step_norm=None,
                inplace=True,
            )
    return np.asarray(embedding, dtype=np.float64)


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


# -- scalers: fitted on the fit rows only, applied to all --------------------------------------
def fit_scaler(X: np.ndarray, kind: str) -> dict:
    if kind == "log":  # DeepInsight's norm-2 / pyDeepInsight's LogScaler
        min0 = X.min(axis=0)
        return {"min": min0, "max": np.float32(np.log(X + np.abs(min0) + 1).max())}
    if kind == "minmax":
        lo, hi = X.min(axis=0), X.max(axis=0)
        return {"min": lo, "range": np.where(hi > lo, hi - lo, 1).astype(np.float32)}
    if kind == "zscore":
        std = X.std(axis=0)
        return {"mean": X.mean(axis=0), "std": np.where(std > 0, std, 1).astype(np.float32)}
    return {}


def _fit_log_scaler(X: np.ndarray) -> tuple[dict, np.ndarray]:
    """`fit_scaler(X, "log")` and `apply_scaler(X, "log", ...)` of the fit rows at once (on
    them the clipping at 1 and at 0 changes nothing)."""
    min0 = X.min(axis=0)
    logged = X + np.abs(min0)
    logged += 1
    np.log(logged, out=logged)
    top = np.float32(logged.max())
    logged /= top
    np.clip(logged, 0, 1, out=logged)
    return {"min": min0, "max": top}, logged.astype(np.float32, copy=False)


def apply_scaler(X: np.ndarray, kind: str, stats: dict) -> np.ndarray:
    """Scaled copy of `X` (float32), computed in place on one new array."""
    if kind == "log":
        # values below the fit data's minimum (unseen rows) clip to 0 instead of log(<1) or NaN
        out = X + np.abs(stats["min"])
        out += 1
        np.maximum(out, 1, out=out)
        np.log(out, out=out)
        out /= stats["max"]
        np.clip(out, 0, 1, out=out)
        return out.astype(np.float32, copy=False)
    if kind == "minmax":
        out = X - stats["min"]
        out /= stats["range"]
        return out.astype(np.float32, copy=False)
    if kind == "zscore":
        out = X - stats["mean"]
        out /= stats["std"]
        return out.astype(np.float32, copy=False)
    return X.astype(np.float32)


def invert_scaler(values: np.ndarray, kind: str, stats: dict) -> np.ndarray:
    if kind == "log":
        return (np.exp(values * stats["max"]) - np.abs(stats["min"]) - 1).astype(np.float32)
    if kind == "minmax":
        return (values * stats["range"] + stats["min"]).astype(np.float32)
    if kind == "zscore":
        return (values * stats["std"] + stats["mean"]).astype(np.float32)
    return values


# -- geometry ----------------------------------------------------------------------------------
def min_area_rotation(points: np.ndarray) -> np.ndarray:
    """Rotation matrix R making the minimum-area bounding rectangle of `points @ R.T`
    axis-aligned (the rectangle is flush with one convex-hull edge)."""
    hull = points[ConvexHull(points).vertices]
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))
    cos, sin = np.cos(angles), np.sin(angles)
    rotations = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1)
    rotated = np.einsum("kij,nj->kni", rotations, hull)
    extent = rotated.max(axis=1) - rotated.min(axis=1)
    return rotations[np.argmin(extent[:, 0] * extent[:, 1])]


def scale_to_grid(coords: np.ndarray, pixels: int) -> np.ndarray:
    """Min-max scale each axis of `coords` onto [0, pixels]."""
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    return (coords - lo) / np.where(hi > lo, hi - lo, 1) * pixels


def bin_coordinates(coords: np.ndarray, pixels: int) -> np.ndarray:
    """Pixel (row, column) of each point: floor of the grid position; the maximum goes to the
    last row/column, so no point falls outside."""
    return np.minimum(np.floor(scale_to_grid(coords, pixels)).astype(np.int64), pixels - 1)


def assign_coordinates(coords: np.ndarray, pixels: int) -> np.ndarray:
    """Optimal assignment of points to pixel centres minimising the total displacement, at most
    ceil(n / pixels**2) points per pixel (one each where pixels**2 >= n)."""
    grid = scale_to_grid(coords, pixels)
    rows, cols = np.meshgrid(np.arange(pixels), np.arange(pixels), indexing="ij")
    centres = np.stack([rows.ravel(), cols.ravel()], 1) + 0.5
    slots = math.ceil(len(coords) / pixels**2)
    cost = np.tile(cdist(grid, centres), (1, slots))
    _, col = linear_sum_assignment(cost)
    pixel = col % (pixels * pixels)
    return np.stack([pixel // pixels, pixel % pixels], 1).astype(np.int64)
