import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from scipy import sparse
from sklearn.manifold import TSNE, trustworthiness
from sklearn.manifold._t_sne import _joint_probabilities_nn, _kl_divergence_bh
from sklearn.neighbors import NearestNeighbors

from textvision.deepinsight.tsne import affinities, initial_layout, kl_gradient, tsne


def blobs(n_per: int = 60, dims: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(3, dims))
    labels = np.repeat(np.arange(3), n_per)
    return (centres[labels] + rng.normal(size=(len(labels), dims))).astype(np.float32), labels


def test_affinities_equal_sklearn_barnes_hut_input():
    points, _ = blobs()
    k = int(3 * 10 + 1)
    distances = NearestNeighbors(n_neighbors=k).fit(points).kneighbors_graph(mode="distance")
    distances.data **= 2
    expected = _joint_probabilities_nn(distances, 10.0, verbose=0)
    ours = affinities(points, 10.0, "euclidean")
    assert abs(ours - expected).max() < 1e-7


def test_pca_start_from_gram_equals_sklearn_pca_start():
    points, _ = blobs()
    direct = initial_layout(points, "pca", 0)
    from_gram = initial_layout(points, "pca", 0, points @ points.T)
    assert np.allclose(from_gram, direct, rtol=1e-3, atol=1e-8)


def test_gradient_and_error_equal_sklearn_exact_barnes_hut():
    """scikit-learn's Barnes-Hut with angle 0 opens every cell: the exact gradient."""
    points, _ = blobs()
    P = affinities(points, 10.0, "euclidean")
    layout = np.random.default_rng(1).normal(scale=3.0, size=(len(points), 2)).astype(np.float32)
    error, grad = _kl_divergence_bh(
        layout.ravel(), P, 1, len(points), 2, angle=0.0, compute_error=True
    )
    ours = np.empty_like(layout)
    values = P.data.astype(np.float32)
    our_error = kl_gradient(
        layout[:, 0].copy(), layout[:, 1].copy(), P.indptr, P.indices, values, ours, True
    )
    assert np.allclose(ours.ravel(), grad, rtol=1e-4, atol=1e-7)
    assert our_error == pytest.approx(error, rel=1e-4)
    without = kl_gradient(
        layout[:, 0].copy(), layout[:, 1].copy(), P.indptr, P.indices, values, ours, False
    )
    assert without == 0.0


def test_layout_is_as_good_as_sklearn_and_separates_clusters():
    points, labels = blobs()
    ours = tsne(points, perplexity=10, max_iter=500)
    ref = TSNE(2, perplexity=10, max_iter=500, random_state=0).fit_transform(points)
    for k in (5, 15):
        assert trustworthiness(points, ours, n_neighbors=k) >= (
            trustworthiness(points, ref, n_neighbors=k) - 0.01
        )
    nearest = NearestNeighbors(n_neighbors=2).fit(ours).kneighbors(ours)[1][:, 1]
    assert (labels[nearest] == labels).mean() == 1.0


def test_layout_is_deterministic_and_independent_of_threads():
    points, _ = blobs(n_per=30)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = tsne(points, perplexity=5, max_iter=300, metric="cosine")
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = tsne(points, perplexity=5, max_iter=300, metric="cosine")
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, two)
    assert np.array_equal(one, tsne(points, perplexity=5, max_iter=300, metric="cosine"))


def test_layout_is_the_same_from_a_fresh_compilation_for_another_cpu(tmp_path):
    """A first run compiles the kernels, later runs load them, another machine compiles them for
    its vector width: the fixed-point sums give the same bits each time."""
    points, _ = blobs(n_per=30)
    np.save(tmp_path / "points.npy", points)
    code = (
        "import numpy as np; from textvision.deepinsight.tsne import tsne; "
        f"p = np.load({str(tmp_path / 'points.npy')!r}); "
        f"np.save({str(tmp_path / 'layout.npy')!r}, tsne(p, perplexity=5, max_iter=300))"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_CPU_NAME": "generic"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    here = tsne(points, perplexity=5, max_iter=300)
    assert np.array_equal(np.load(tmp_path / "layout.npy"), here)


def test_too_few_iterations_are_refused():
    points, _ = blobs(n_per=10)
    with pytest.raises(ValueError, match="max_iter must be at least 250"):
        tsne(points, perplexity=5, max_iter=100)


def test_zero_norm_points_are_at_cosine_distance_one():
    points, _ = blobs(n_per=10)
    points[0] = 0.0
    P = affinities(points, 5.0, "cosine")
    assert sparse.isspmatrix_csr(P) and np.isfinite(P.data).all()
    assert P.sum() == pytest.approx(1.0)


def test_early_exaggeration_reaches_both_backends_from_the_config(tmp_path):
    from test_reliability import write_embeddings

    from textvision.cli import main
    from textvision.core.io import attrs_dict, open_h5

    points, _ = blobs(n_per=30)
    assert not np.array_equal(
        tsne(points, perplexity=5, max_iter=300),
        tsne(points, perplexity=5, max_iter=300, early_exaggeration=4.0),
    )
    emb = write_embeddings(tmp_path / "e.h5", n=60, hidden=30)
    for backend in ("numba", "sklearn"):
        out = tmp_path / f"{backend}.h5"
        argv = ["fit-mapping", "--embeddings", str(emb), "--out", str(out), "--set", "pixels=8"]
        argv += ["--set", f"tsne.backend={backend}", "--set", "tsne.early_exaggeration=4"]
        assert main([*argv, "--set", "tsne.perplexity=5"]) == 0
        with open_h5(out) as fh:
            assert attrs_dict(fh)["params"]["early_exaggeration"] == 4


def test_numba_caches_its_kernels_in_the_user_cache_not_in_the_package():
    import numba

    import textvision
    from textvision.deepinsight import tsne  # noqa: F401 - sets the cache folder

    package = Path(textvision.__file__).parent
    assert numba.config.CACHE_DIR
    assert package not in Path(numba.config.CACHE_DIR).parents
