"""textvision.report.stats (seed intervals, paired bootstrap, McNemar) and the comparisons
forest plot."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from textvision.report.figures import plot_comparisons
from textvision.report.stats import mcnemar, paired_bootstrap, seed_interval

T_975_DF2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))  # closed form for 2 degrees of freedom


def simulated(n: int, runs: int, accuracy: float, seed: int) -> np.ndarray:
    """[runs, n] correctness: each example right with probability `accuracy`, runs independent."""
    return np.random.default_rng(seed).random((runs, n)) < accuracy


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


# seed_interval


def test_seed_interval_three_values():
    result = seed_interval([1, 2, 3])
    assert result["mean"] == 2.0 and result["std"] == 1.0 and result["n"] == 3
    half = T_975_DF2 / math.sqrt(3)
    assert result["ci_low"] == pytest.approx(2 - half, rel=1e-12)
    assert result["ci_high"] == pytest.approx(2 + half, rel=1e-12)
    assert all(type(result[k]) is float for k in ("mean", "std", "ci_low", "ci_high"))


def test_seed_interval_drops_none_and_handles_one_and_none():
    assert seed_interval([None, 0.8, None]) == {
        "mean": 0.8,
        "std": None,
        "ci_low": None,
        "ci_high": None,
        "n": 1,
    }
    empty = {"mean": None, "std": None, "ci_low": None, "ci_high": None, "n": 0}
    assert seed_interval([]) == empty
    assert seed_interval([None, None]) == empty
    assert seed_interval(np.array([1.0, 2.0, 3.0]))["mean"] == 2.0


def test_seed_interval_wider_at_higher_confidence():
    narrow, wide = seed_interval([0.7, 0.8, 0.75], 0.9), seed_interval([0.7, 0.8, 0.75], 0.99)
    assert wide["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < wide["ci_high"]


# paired_bootstrap


@pytest.mark.parametrize("runs", [1, 5])
def test_bootstrap_side_against_itself_is_exactly_zero(runs):
    a = simulated(3000, runs, 0.8, seed=1)
    result = paired_bootstrap(a, a.copy(), n_boot=500)
    assert (result["difference"], result["ci_low"], result["ci_high"]) == (0.0, 0.0, 0.0)
    assert result["n_examples"] == 3000 and result["n_boot"] == 500


def test_bootstrap_difference_is_mean_accuracy_difference():
    a, b = simulated(1000, 3, 0.8, seed=2), simulated(1000, 1, 0.7, seed=3)
    result = paired_bootstrap(a, b[0], n_boot=200)
    assert result["difference"] == pytest.approx(a.mean(axis=1).mean() - b.mean())
    assert result["ci_low"] < result["difference"] < result["ci_high"]


def test_bootstrap_contains_truth_and_narrows_with_more_examples():
    widths = []
    for n in (500, 8000):
        a, b = simulated(n, 5, 0.80, seed=n), simulated(n, 5, 0.75, seed=n + 1)
        result = paired_bootstrap(a, b, n_boot=2000, seed=7)
        assert result["ci_low"] < 0.05 < result["ci_high"]
        widths.append(result["ci_high"] - result["ci_low"])
    assert widths[1] < widths[0] / 2  # 16x the examples: about a quarter of the width


def test_bootstrap_is_paired():
    """Two models that agree on most examples: the paired interval is far narrower than one
    that treated them as independent, and close to the normal-theory paired interval."""
    rng = np.random.default_rng(4)
    n = 4000
    a = rng.random(n) < 0.8
    b = a.copy()
    flip = rng.choice(n, 200, replace=False)
    b[flip] = ~b[flip]
    result = paired_bootstrap(a, b, n_boot=4000, seed=1)
    d = a.astype(float) - b.astype(float)
    paired_se = d.std() / math.sqrt(n)
    unpaired_se = math.sqrt(a.var() / n + b.var() / n)
    width = result["ci_high"] - result["ci_low"]
    assert width == pytest.approx(2 * 1.96 * paired_se, rel=0.15)
    assert width < 0.5 * 2 * 1.96 * unpaired_se


def test_bootstrap_deterministic_for_a_seed():
    a, b = simulated(2000, 3, 0.8, seed=5), simulated(2000, 2, 0.78, seed=6)
    first = paired_bootstrap(a, b, n_boot=1000, seed=3)
    assert paired_bootstrap(a, b, n_boot=1000, seed=3) == first
    assert paired_bootstrap(a, b, n_boot=1000, seed=4) != first


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\(2, 100\).*\(3, 99\)"):
        paired_bootstrap(np.ones((2, 100), bool), np.ones((3, 99), bool))
    with pytest.raises(ValueError, match=r"\(100,\).*\(99,\)"):
        mcnemar(np.ones(100, bool), np.ones(99, bool))


# mcnemar


def test_mcnemar_known_binomial_case():
    a = np.array([1] * 10 + [0] * 2 + [1] * 5 + [0] * 3, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5 + [0] * 3, bool)
    result = mcnemar(a, b)
    assert (result["a_only"], result["b_only"], result["n_pairs"]) == (10, 2, 1)
    assert result["p_value"] == pytest.approx(0.03857421875, rel=1e-12)  # 2 * 79 / 4096
    assert result["method"] == "exact binomial"
    assert mcnemar(b, a)["p_value"] == pytest.approx(result["p_value"], rel=1e-12)


def test_mcnemar_side_against_itself():
    a = simulated(500, 3, 0.8, seed=8)
    result = mcnemar(a, a)
    assert (result["a_only"], result["b_only"], result["p_value"]) == (0, 0, 1.0)


def test_mcnemar_run_pairing():
    one, five, three = (simulated(300, r, 0.7, seed=r) for r in (1, 5, 3))
    single = mcnemar(one, five)
    assert single["n_pairs"] == 5
    assert single["a_only"] == sum(int((one[0] & ~run).sum()) for run in five)
    assert mcnemar(five, one[0])["n_pairs"] == 5
    by_index = mcnemar(five, three)
    assert by_index["n_pairs"] == 3
    assert by_index["b_only"] == sum(int((three[i] & ~five[i]).sum()) for i in range(3))


# plot_comparisons


def test_plot_comparisons_writes_png(tmp_path):
    rows = [
        {"a": f"m{i}", "b": "logreg", "difference": d, "ci_low": d - 0.01, "ci_high": d + 0.01}
        | {"p_value": p}
        for i, (d, p) in enumerate([(0.02, 0.001), (-0.005, 0.4), (0.0, 1.0)])
    ]
    plot_comparisons(rows, tmp_path / "three.png")
    plot_comparisons(rows * 4, tmp_path / "twelve.png")
    plot_comparisons([], tmp_path / "none.png")
    assert png_size(tmp_path / "twelve.png")[1] > png_size(tmp_path / "three.png")[1]
    assert png_size(tmp_path / "none.png")[1] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none.png", "three.png", "twelve.png"]
