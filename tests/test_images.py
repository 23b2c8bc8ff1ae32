import h5py
import numpy as np
import pytest
from test_reliability import fit, write_embeddings

from textvision.deepinsight.render import PixelMoments, render_images
from textvision.deepinsight.transformer import DeepInsightTransformer


def test_pixel_statistics_are_those_of_the_training_images(tmp_path):
    emb = write_embeddings(tmp_path / "e.h5", n=3000, hidden=64)
    assert fit(emb, tmp_path / "m.h5") == 0
    render_images(emb, tmp_path / "m.h5", tmp_path / "i.h5")
    with h5py.File(tmp_path / "i.h5") as fh:
        split = fh["split"].asstr()[:]
        train = fh["images"][:][split == "train"].astype(np.float64)
        assert len(train) == 2400
        assert np.allclose(fh["pixel_mean"][:], train.mean(0), rtol=1e-6, atol=1e-7)
        assert np.allclose(fh["pixel_std"][:], train.std(0), rtol=1e-5, atol=1e-7)
        assert fh.attrs["mu"] == pytest.approx(train.mean(), rel=1e-9)
        assert fh.attrs["sigma"] == pytest.approx(train.std(), rel=1e-7)


def test_moments_do_not_cancel_on_a_large_offset():
    rng = np.random.default_rng(0)
    rows = (1e4 + rng.normal(scale=1e-2, size=(5000, 3))).astype(np.float32)
    keep = rng.random(5000) < 0.7
    moments = PixelMoments()
    for lo in range(0, 5000, 1024):
        moments.add(rows[lo : lo + 1024], keep[lo : lo + 1024])
    expected = rows[keep].astype(np.float64)
    assert np.allclose(moments.mean(), expected.mean(0), rtol=1e-9)
    assert np.allclose(np.sqrt(moments.var()), expected.std(0), rtol=1e-3)


def test_threads_give_the_same_images():
    X = np.random.default_rng(2).lognormal(size=(700, 120)).astype(np.float32)
    transformer = DeepInsightTransformer(pixels=12, projector="pca", n_jobs=1).fit(X)
    one = transformer.transform(X)
    transformer.set_params(n_jobs=3)
    assert np.array_equal(transformer.transform(X), one)
