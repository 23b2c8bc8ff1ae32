"""What every way of turning feature vectors into images shares: a scaler fitted on the fit
rows, a map from each feature to one pixel of a P x P grid, and the rendering (a pixel holds
the mean of its scaled features, `empty_value` where none lands). Methods differ only in how
they place the features (`_place`); they register under a name (`register_method`) that
`mapping.h5` and bundles record, and `methods.get_method` returns the class of a name, as
torchvision's `register_model` / `get_model` do.
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted
from threadpoolctl import threadpool_limits

from textvision.core.threads import share
from textvision.deepinsight.functional import (
    SCALERS,
    apply_scaler,
    average_pixels,
    averaging_plan,
    feature_counts,
    fit_transform_scaler,
    invert_scaler,
)
from textvision.deepinsight.params import check_params

LAYOUTS = ("fitted", "shuffled")
BLOCK_ROWS = 64  # rows scaled and binned at a time (at most chunk_size): the block stays in cache

# the parameters every method has (the `deepinsight` config keys of the same names)
BASE_CONSTRAINTS = {
    "pixels": [Interval(Integral, 2, 512, closed="both")],
    "scaler": [StrOptions(set(SCALERS))],
    "empty_value": [Interval(Real, None, None, closed="neither")],
    "layout": [StrOptions(set(LAYOUTS))],
    "layout_seed": [Interval(Integral, 0, None, closed="left")],
    "chunk_size": [Interval(Integral, 1, None, closed="left")],
    "n_jobs": [Integral, None],
}

METHODS: dict[str, type[PixelMapTransformer]] = {}


def register_method(name: str):
    """Class decorator: make a `PixelMapTransformer` subclass available as method `name`."""

    def register(cls):
        if name in METHODS:
            raise ValueError(f"image method {name!r} is registered already")
        cls.method = name
        METHODS[name] = cls
        return cls

    return register


class PixelMapTransformer(TransformerMixin, BaseEstimator):
    """Base of the image methods: `[n_samples, n_features]` -> `[n_samples, P, P]` float32.

    Subclasses set `method` (by `register_method`), extend `_parameter_constraints`, list the
    fitted arrays a `mapping.h5` keeps in `_STATE` and implement `_place(scaled)`, the
    `[n_features, 2]` pixel (row, column) of each feature from the scaled fit rows.
    `one_feature_per_pixel` methods need pixels² >= features, checked before any work.

    `layout="shuffled"` is the no-structure control: the fitted pixels and their occupancy are
    kept, but features are dealt to them by a random permutation (`layout_seed`). `n_jobs`:
    threads (None: every CPU this process may use); results are the same for any number.
    Fitted attributes: `scale_` (scaler statistics), `pixels_` (`[n_features, 2]`),
    `feature_counts_` (`[P, P]` features per pixel), `occupancy_`.
    """

    method: ClassVar[str] = ""
    one_feature_per_pixel: ClassVar[bool] = True
    discretization: ClassVar[str] = "one per pixel"  # how features share pixels
    _STATE: ClassVar[tuple[str, ...]] = ()
    _parameter_constraints: ClassVar[dict] = BASE_CONSTRAINTS

    def _set_shared(self, pixels, scaler, empty_value, layout, layout_seed, chunk_size, n_jobs):
        """Store the parameters every method has (each `__init__` lists them, as scikit-learn
        reads the parameters from its signature)."""
        self.pixels, self.scaler, self.empty_value = pixels, scaler, empty_value
        self.layout, self.layout_seed = layout, layout_seed
        self.chunk_size, self.n_jobs = chunk_size, n_jobs

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None):
        self._validate_params()
        X = check_array(X, dtype=np.float32)
        self.n_features_in_ = X.shape[1]
        check_grid(type(self), self.pixels, X.shape[1])
        # one BLAS thread: matrix products then give the same bits for any thread count
        with threadpool_limits(limits=1, user_api="blas"):
            self.scale_, scaled = fit_transform_scaler(X, self.scaler)
            self.pixels_ = self._place(scaled)
        if self.layout == "shuffled":  # same pixels, same counts; features dealt at random
            self.pixels_ = self.pixels_[
                np.random.default_rng(self.layout_seed).permutation(len(self.pixels_))
            ]
        self.feature_counts_ = feature_counts(self.pixels_, self.pixels)
        self._build_plan()
        return self

    def _place(self, scaled: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _validate_params(self):
        """scikit-learn's check of `_parameter_constraints`, in `check_params`' words."""
        check_params(self._parameter_constraints, self.get_params(deep=False), type(self).__name__)

    def _build_plan(self):
        """The `functional.AveragingPlan` `transform` averages pixels with."""
        self._plan = averaging_plan(self.pixels_, self.pixels)

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
        if not hasattr(self, "_plan"):
            self._build_plan()
        out = np.empty((len(X), self.pixels, self.pixels), dtype=np.float32)
        flat = out.reshape(len(X), -1)
        step = max(1, min(self.chunk_size, BLOCK_ROWS))
        starts = range(0, len(X), step)

        def render(take):  # one thread: blocks as they come free, one buffer
            means = np.empty((step, len(self._plan.pixel_index)), dtype=np.float32)
            while (lo := take()) is not None:
                self._render_block(X[lo : lo + step], flat[lo : lo + step], means)

        share(starts, min(self._threads(), len(starts)), render)  # numpy releases the GIL
        return out

    def _render_block(self, rows: np.ndarray, dst: np.ndarray, means: np.ndarray) -> None:
        """Images of a block of rows into `dst` (`[rows, P*P]`)."""
        block = apply_scaler(rows, self.scaler, self.scale_)
        average_pixels(block, self._plan, self.empty_value, out=dst, work=means)

    def _threads(self) -> int:
        if self.n_jobs is None:
            return len(os.sched_getaffinity(0))
        return effective_n_jobs(self.n_jobs)

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
        state.pop("_plan", None)
        return state


def check_grid(cls: type[PixelMapTransformer], pixels: int, features: int) -> None:
    """Refuse a grid too small for a method that gives every feature a pixel of its own."""
    if cls.one_feature_per_pixel and pixels * pixels < features:
        least = int(np.ceil(np.sqrt(features)))
        raise ValueError(
            f"{cls.__name__}: {pixels}x{pixels} = {pixels * pixels} pixels for {features} "
            f"features; method {cls.method!r} places one feature per pixel: pixels at least "
            f"{least}"
        )


def occupancy(counts: np.ndarray) -> dict:
    """How a discretisation uses the grid: pixels used, most and mean features per used pixel."""
    return {
        "pixels_used": int((counts > 0).sum()),
        "pixels_total": int(counts.size),
        "max_features_per_pixel": int(counts.max()),
        "mean_features_per_used_pixel": float(counts[counts > 0].mean()),
        "n_features": int(counts.sum()),
    }


def grid_positions(pixels: int) -> np.ndarray:
    """`[pixels², 2]` (row, column) of every pixel, row by row."""
    rows, cols = np.divmod(np.arange(pixels * pixels), pixels)
    return np.stack([rows, cols], 1).astype(np.int64)


@register_method("raster")
class RasterTransformer(PixelMapTransformer):
    """Features in their given order, row by row, one per pixel: the no-layout reference (the
    order the encoder gives: layer by layer, then hidden unit)."""

    def __init__(
        self,
        pixels=50,
        scaler="log",
        *,
        empty_value=0.0,
        layout="fitted",
        layout_seed=0,
        chunk_size=4096,
        n_jobs=None,
    ):
        self._set_shared(pixels, scaler, empty_value, layout, layout_seed, chunk_size, n_jobs)

    def _place(self, scaled: np.ndarray) -> np.ndarray:
        return grid_positions(self.pixels)[: scaled.shape[1]]
