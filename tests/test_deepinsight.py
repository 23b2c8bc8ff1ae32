import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from textvision.deepinsight.transformer import (
    DeepInsightTransformer,
    assign_coordinates,
    bin_coordinates,
    min_area_rotation,
)


def rotated_rectangle(theta: float, n: int = 400, seed: int = 0) -> np.ndarray:
    pts = np.random.default_rng(seed).uniform([0, 0], [10, 2], size=(n, 2))
    pts = np.vstack([pts, [[0, 0], [10, 0], [0, 2], [10, 2]]])  # the corners: exact extent
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return pts @ rot.T + [3, -7]


@pytest.mark.parametrize("theta", [0.0, 0.4, 1.0, 2.5, -0.7])
def test_rotated_rectangle_comes_out_axis_aligned(theta):
    points = rotated_rectangle(theta)
    aligned = points @ min_area_rotation(points).T
    extent = np.sort(aligned.max(0) - aligned.min(0))
    assert extent == pytest.approx([2, 10], abs=1e-9)


def test_binning_edges_keep_every_point_inside():
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.25], [0.999, 0.0]])
    pix = bin_coordinates(coords, 4)
    assert pix.tolist() == [[0, 0], [3, 3], [2, 1], [3, 0]]  # the maximum lands in the last row
    many = np.random.default_rng(1).normal(size=(1000, 2))
    pix = bin_coordinates(many, 7)
    assert pix.min() == 0 and pix.max() == 6


def test_features_sharing_a_pixel_are_averaged():
    di = DeepInsightTransformer(pixels=2, scaler="none", projector="pca")
    X = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    di.fit(X)
    di.pixels_ = np.array([[0, 0], [0, 0], [0, 1], [1, 1], [1, 1], [1, 1]])  # hand-set mapping
    di.feature_counts_ = np.array([[2, 1], [0, 3]])
    di._build_plan()
    img = di.transform(X)
    assert img.dtype == np.float32 and img.shape == (5, 2, 2)
    np.testing.assert_allclose(img[:, 0, 0], X[:, :2].mean(1), rtol=1e-6)
    np.testing.assert_allclose(img[:, 0, 1], X[:, 2], rtol=1e-6)
    np.testing.assert_allclose(img[:, 1, 1], X[:, 3:].mean(1), rtol=1e-6)
    assert (img[:, 1, 0] == 0).all()  # empty pixel: empty_value


def test_empty_value_is_configurable():
    X = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    img = DeepInsightTransformer(
        pixels=6, scaler="minmax", projector="pca", empty_value=-1.0
    ).fit_transform(X)
    di = DeepInsightTransformer(pixels=6, scaler="minmax", projector="pca").fit(X)
    assert (img[:, di.feature_counts_ == 0] == -1).all()


def test_assignment_gives_each_feature_its_own_pixel():
    coords = np.random.default_rng(0).normal(size=(40, 2))
    pix = assign_coordinates(coords, 7)
    assert len({tuple(p) for p in pix}) == 40
    crowded = assign_coordinates(np.random.default_rng(1).normal(size=(60, 2)), 5)
    counts = np.bincount(crowded[:, 0] * 5 + crowded[:, 1], minlength=25)
    assert counts.max() == 3  # ceil(60 / 25)


def test_inverse_transform_recovers_features_that_own_their_pixel():
    X = np.random.default_rng(0).normal(size=(30, 20)).astype(np.float32)
    for scaler in ("log", "minmax", "zscore", "none"):
        di = DeepInsightTransformer(
            pixels=8, scaler=scaler, projector="pca", discretization="assignment"
        ).fit(X)
        assert di.occupancy_["max_features_per_pixel"] == 1
        np.testing.assert_allclose(di.inverse_transform(di.transform(X)), X, atol=1e-4)


def test_sklearn_api():
    X = np.random.default_rng(0).normal(size=(30, 50)).astype(np.float32)
    di = DeepInsightTransformer(pixels=10, perplexity=5, max_iter=250)
    with pytest.raises(NotFittedError):
        di.transform(X)
    assert clone(di).get_params() == di.get_params()
    di.set_params(scaler="minmax")
    assert di.scaler == "minmax"
    images = di.fit_transform(X)
    assert images.shape == (30, 10, 10) and images.dtype == np.float32
    assert di.coords_.shape == (50, 2) and di.pixels_.shape == (50, 2)
    again = pickle.loads(pickle.dumps(di))
    np.testing.assert_array_equal(again.transform(X), images)
    with pytest.raises(ValueError, match="features"):
        di.transform(X[:, :10])
    with pytest.raises(ValueError, match="perplexity"):
        DeepInsightTransformer(pixels=10, perplexity=80).fit(X)
    with pytest.raises(ValueError, match="scaler"):
        DeepInsightTransformer(scaler="bogus").fit(X)


def test_scaler_statistics_come_from_fit_rows_only():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 30)).astype(np.float32)
    di = DeepInsightTransformer(pixels=6, projector="pca").fit(X[:30])
    other = X.copy()
    other[30:] = rng.normal(10, 5, size=(10, 30))  # only the unseen rows change
    di2 = DeepInsightTransformer(pixels=6, projector="pca").fit(other[:30])
    np.testing.assert_array_equal(di.pixels_, di2.pixels_)
    np.testing.assert_array_equal(di.scale_["min"], di2.scale_["min"])
    log_scaled = di.transform(other[30:])
    assert log_scaled.max() <= 1 and log_scaled.min() >= 0  # log scaler clips unseen values


def test_same_positions_give_pydeepinsight_pixels_and_images():
    pytest.importorskip("cv2", reason="pyDeepInsight needs OpenCV (test extra)")
    from pyDeepInsight import ImageTransformer

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(25, 300))
    di = DeepInsightTransformer(pixels=12, scaler="none", perplexity=10, max_iter=250).fit(X)
    ref = ImageTransformer(feature_extractor=_Fixed(di.coords_), discretization="bin", pixels=12)
    ref.fit(X)
    # pyDeepInsight rotates hulls the wrong way round (its minimum rectangle is not minimal), so
    # hand it the positions after our rotation: from the same positions, the same pixels
    ref._xrot = di.coords_
    ref._calculate_coords()
    np.testing.assert_array_equal(ref.coords(), di.pixels_)
    np.testing.assert_allclose(ref.transform(X, img_format="scalar"), di.transform(X), atol=1e-6)
    np.testing.assert_array_equal(ref.feature_density_matrix(), di.feature_counts_)


class _Fixed:
    def __init__(self, coords):
        self.coords = coords

    def fit_transform(self, X):
        return self.coords


def test_shuffled_layout_keeps_occupancy_and_moves_features(tmp_path):
    from textvision.deepinsight.store import load_mapping, save_mapping

    X = np.random.default_rng(0).normal(size=(60, 300)).astype(np.float32)
    fitted = DeepInsightTransformer(pixels=12, projector="pca").fit(X)
    shuffled = clone(fitted).set_params(layout="shuffled").fit(X)
    np.testing.assert_array_equal(shuffled.feature_counts_, fitted.feature_counts_)
    np.testing.assert_array_equal(shuffled.coords_, fitted.coords_)  # the same fit
    moved = (shuffled.pixels_ != fitted.pixels_).any(axis=1)
    assert moved.mean() > 0.8  # most features now sit elsewhere
    # the same pixels hold the same number of features, each the mean of other features
    img_f, img_s = fitted.transform(X), shuffled.transform(X)
    assert ((img_f != 0) == (img_s != 0)).mean() > 0.99 and not np.allclose(img_f, img_s)
    other = clone(shuffled).set_params(layout_seed=1).fit(X)
    assert (other.pixels_ != shuffled.pixels_).any()
    again = clone(shuffled).fit(X)
    np.testing.assert_array_equal(again.pixels_, shuffled.pixels_)  # seeded
    save_mapping(shuffled, tmp_path / "m.h5", {})
    loaded, attrs = load_mapping(tmp_path / "m.h5")
    assert attrs["params"]["layout"] == "shuffled" and loaded.layout == "shuffled"
    np.testing.assert_array_equal(loaded.transform(X), img_s)
    with pytest.raises(ValueError, match="layout must be one of"):
        DeepInsightTransformer(layout="random").fit(X)
