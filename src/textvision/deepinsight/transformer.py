"""DeepInsight (Sharma et al., 2019) as a scikit-learn transformer: feature vectors -> images.

Features are points: a 2-D projection of the transposed (scaled) matrix places every feature,
the convex hull's minimum-area bounding rectangle is rotated axis-parallel, and positions are
discretised onto a P x P grid, by binning (DeepInsight, pyDeepInsight `bin`), by binning after
a quantile transform of each axis (pyDeepInsight `qtb`), or by an optimal one-to-one assignment
of features to pixel centres. A sample's image holds, in each pixel, the mean of its scaled
features that landed there.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import ConvexHull
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA, KernelPCA
from sklearn.preprocessing import quantile_transform
from sklearn.utils._param_validation import Interval, StrOptions
from threadpoolctl import threadpool_limits

from textvision.deepinsight.base import BASE_CONSTRAINTS, PixelMapTransformer, register_method
from textvision.deepinsight.jit import numba_threads
from textvision.deepinsight.tsne import TSNE_CONSTRAINTS, tsne

PROJECTORS = ("tsne", "pca", "kpca", "umap")
DISCRETIZATIONS = ("bin", "quantile", "assignment")
BACKENDS = ("sklearn", "numba")  # t-SNE implementations
TSNE_SETTINGS = tuple(name for name in TSNE_CONSTRAINTS if name != "n_jobs")
UMAP_SETTINGS = ("n_neighbors", "min_dist", "umap_metric")

# the allowed values of every parameter, checked by `fit` (the `deepinsight` config keys;
# tests/test_defaults.py holds them equal to the config schema's)
PARAMETER_CONSTRAINTS = {
    **BASE_CONSTRAINTS,
    "projector": [StrOptions(set(PROJECTORS))],
    **{name: TSNE_CONSTRAINTS[name] for name in TSNE_SETTINGS},
    "backend": [StrOptions(set(BACKENDS))],
    "pca_components": [Interval(Integral, 2, None, closed="left"), None],
    "n_neighbors": [Interval(Integral, 2, None, closed="left")],
    "min_dist": [Interval(Real, 0, None, closed="left")],
    "umap_metric": [StrOptions({"euclidean", "cosine", "correlation"})],
    "discretization": [StrOptions(set(DISCRETIZATIONS))],
}


@register_method("deepinsight")
class DeepInsightTransformer(PixelMapTransformer):
    """Map `[n_samples, n_features]` vectors to `[n_samples, pixels, pixels]` float32 images.

    Parameters are the `deepinsight` config keys (`deepinsight.tsne.seed` is `random_state`,
    `deepinsight.umap.metric` is `umap_metric`), with the schema's defaults and allowed values
    (`PARAMETER_CONSTRAINTS`, checked by `fit`); docs/configuration.md describes each. The
    rendering, the `shuffled` control and `n_jobs` are `PixelMapTransformer`'s.

    Fitted attributes, besides the base class's: `embedding_` (2-D feature positions),
    `rotation_` (2x2), `coords_` (rotated positions).
    """

    one_feature_per_pixel = False
    _STATE = ("embedding_", "rotation_", "coords_")
    _parameter_constraints = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        pixels=50,
        scaler="log",
        projector="tsne",
        *,
        perplexity=30,
        early_exaggeration=12.0,
        metric="euclidean",
        init="pca",
        learning_rate="auto",
        max_iter=1000,
        backend="numba",
        pca_components=None,
        n_neighbors=15,
        min_dist=0.1,
        umap_metric="euclidean",
        discretization="bin",
        empty_value=0.0,
        layout="fitted",
        layout_seed=0,
        random_state=0,
        chunk_size=4096,
        n_jobs=None,
    ):
        self._set_shared(pixels, scaler, empty_value, layout, layout_seed, chunk_size, n_jobs)
        self.projector = projector
        self.perplexity = perplexity
        self.early_exaggeration = early_exaggeration
        self.metric = metric
        self.init = init
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.backend = backend
        self.pca_components = pca_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.umap_metric = umap_metric
        self.discretization = discretization
        self.random_state = random_state

    def _place(self, scaled: np.ndarray) -> np.ndarray:
        """Project the features (rows of the transposed matrix), rotate the hull's
        minimum-area rectangle axis-parallel, discretise onto the grid."""
        settings = {name: getattr(self, name) for name in (*TSNE_SETTINGS, *UMAP_SETTINGS)}
        self.embedding_ = project(
            scaled.T, self.projector, self.pca_components, self.backend, self._threads(),
            settings,
        )  # fmt: skip
        self.rotation_ = min_area_rotation(self.embedding_)
        self.coords_ = self.embedding_ @ self.rotation_.T
        return DISCRETIZE[self.discretization](self.coords_, self.pixels)


# -- projection --------------------------------------------------------------------------------
def project(
    points: np.ndarray,
    projector: str,
    pca_components: int | None,
    backend: str,
    n_jobs: int,
    settings: dict,
) -> np.ndarray:
    """2-D positions of the rows of `points` (DeepInsight: the features, rows of the transposed
    scaled matrix), float64.

    Args:
        points: `[n_features, n_samples]`.
        projector: `tsne`, `pca`, `kpca` (RBF kernel PCA) or `umap` (umap-learn).
        pca_components: first reduce to this many dimensions with PCA (None: no reduction).
        backend: the t-SNE, `numba` (`tsne`) or `sklearn` (`sklearn.manifold.TSNE`).
        n_jobs: threads of the numba t-SNE and of UMAP's numba kernels.
        settings: `tsne`'s keyword arguments (`TSNE_SETTINGS`) and UMAP's (`UMAP_SETTINGS`);
            `random_state` seeds every projector.
    """
    random_state = settings["random_state"]
    if pca_components and pca_components < min(points.shape):
        points = PCA(pca_components, random_state=random_state).fit_transform(points)
    if projector == "pca":
        return PCA(2, random_state=random_state).fit_transform(points).astype(np.float64)
    if projector == "kpca":
        return KernelPCA(2, kernel="rbf", random_state=random_state).fit_transform(points)
    if projector == "umap":
        with numba_threads(n_jobs):  # its numba kernels; seeded, the result is the same
            return umap_embedding(points, *(settings[k] for k in UMAP_SETTINGS), random_state)
    settings = {name: settings[name] for name in TSNE_SETTINGS}
    if settings["perplexity"] >= len(points):
        raise ValueError(
            f"t-SNE perplexity ({settings['perplexity']}) must be below the number of features "
            f"({len(points)})"
        )
    if backend == "numba":
        return tsne(points, **settings, n_jobs=n_jobs)
    from sklearn.manifold import TSNE

    with threadpool_limits(limits=1, user_api="openmp"):  # its gradient sums over threads
        return TSNE(2, **settings).fit_transform(points).astype(np.float64)


def umap_embedding(
    points: np.ndarray, n_neighbors: int, min_dist: float, metric: str, random_state: int
) -> np.ndarray:
    """UMAP's 2-D embedding of the rows of `points` (umap-learn, imported here: it compiles its
    numba kernels at import, which only this projector should pay). Seeded, umap-learn runs its
    optimisation on one thread: the same positions on any thread count."""
    import umap

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, len(points) - 1),
        min_dist=min_dist,
        metric=metric,
        random_state=random_state,
        n_jobs=1,
    )
    return reducer.fit_transform(points).astype(np.float64)


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


def quantile_coordinates(coords: np.ndarray, pixels: int) -> np.ndarray:
    """Pixel (row, column) of each point after each axis is quantile-transformed to uniform
    over `pixels` quantiles (pyDeepInsight's `qtb`): rows and columns hold about equally many
    points, so fewer share a pixel than with plain binning."""
    uniform = quantile_transform(coords, n_quantiles=min(pixels, len(coords)), copy=True)
    return bin_coordinates(uniform, pixels)


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


# discretisation name -> (rotated positions, pixels) -> pixel (row, column) per feature
DISCRETIZE = {
    "bin": bin_coordinates,
    "quantile": quantile_coordinates,
    "assignment": assign_coordinates,
}
