"""Uncertainty of test accuracies: seed intervals, a paired bootstrap over examples (and runs),
and McNemar's exact test. scipy is imported inside the functions that need it."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

_CHUNK_ELEMENTS = 4_000_000  # resampled example indices drawn per bootstrap chunk (32 MB)


def seed_interval(values: Iterable[float | None], confidence: float = 0.95) -> dict:
    """Mean over seeds, sample std (ddof=1) and Student-t interval mean +- t * std / sqrt(n).
    None (and NaN) values are dropped; with one value std and interval are None, with none
    every entry is None and n is 0."""
    from scipy.stats import t

    _check_confidence(confidence)
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(kept)
    if n == 0:
        return {"mean": None, "std": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(np.mean(kept))
    if n == 1:
        return {"mean": mean, "std": None, "ci_low": None, "ci_high": None, "n": 1}
    std = float(np.std(kept, ddof=1))
    half = float(t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def paired_bootstrap(
    correct_a, correct_b, n_boot: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """Accuracy difference a - b (means over runs) with a percentile bootstrap interval.
    `correct_a` [runs_a, n] and `correct_b` [runs_b, n] say per run whether each of the same n
    examples was right (1-D: one run). Each replicate resamples the examples (the same ones for
    both sides) and, on a side with several runs, its runs; with equal run counts the run
    draws are shared (runs paired by index, as in `mcnemar`), so a side against itself gives
    exactly 0 and [0, 0]."""
    _check_confidence(confidence)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    a, b = _as_runs(correct_a, correct_b)
    runs_a, n = a.shape
    runs_b = b.shape[0]
    difference = float(a.mean(axis=1).mean() - b.mean(axis=1).mean())
    rng = np.random.default_rng(seed)
    both = np.concatenate([a, b]).T  # [n, runs_a + runs_b], exact 0/1 floats
    chunk = max(1, _CHUNK_ELEMENTS // n)
    diffs = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        picks = rng.integers(0, n, size=(size, n))
        picks += np.arange(size)[:, None] * n
        counts = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n)
        # integer sums (at most n), exact in float64 whatever the summation order
        accuracy = (counts.astype(np.float64) @ both) / n
        acc_a, acc_b = accuracy[:, :runs_a], accuracy[:, runs_a:]
        runs_pick_a = rng.integers(0, runs_a, size=(size, runs_a)) if runs_a > 1 else None
        if runs_b > 1:
            same = runs_b == runs_a
            runs_pick_b = runs_pick_a if same else rng.integers(0, runs_b, size=(size, runs_b))
        else:
            runs_pick_b = None
        diffs[start : start + size] = _run_mean(acc_a, runs_pick_a) - _run_mean(acc_b, runs_pick_b)
    low, high = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "difference": difference,
        "ci_low": float(low),
        "ci_high": float(high),
        "n_examples": int(n),
        "n_boot": int(n_boot),
    }


def mcnemar(correct_a, correct_b) -> dict:
    """McNemar's exact test, discordant examples pooled over run pairs: a single run is paired
    with every run of the other side, otherwise runs pair by index up to the smaller count."""
    from scipy.stats import binomtest

    a, b = _as_runs(correct_a, correct_b)
    a, b = a.astype(bool), b.astype(bool)
    runs_a, runs_b = a.shape[0], b.shape[0]
    if runs_a == 1:
        pairs = [(0, j) for j in range(runs_b)]
    elif runs_b == 1:
        pairs = [(i, 0) for i in range(runs_a)]
    else:
        pairs = [(i, i) for i in range(min(runs_a, runs_b))]
    a_only = sum(int(np.count_nonzero(a[i] & ~b[j])) for i, j in pairs)
    b_only = sum(int(np.count_nonzero(b[j] & ~a[i])) for i, j in pairs)
    discordant = a_only + b_only
    p_value = float(binomtest(a_only, discordant, 0.5).pvalue) if discordant else 1.0
    return {
        "a_only": a_only,
        "b_only": b_only,
        "n_pairs": len(pairs),
        "p_value": min(p_value, 1.0),
        "method": "exact binomial",
    }


def _as_runs(correct_a, correct_b) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as float 0/1 arrays [runs, n] over the same n > 0 examples."""
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    shapes = f"correct_a has shape {a.shape}, correct_b has shape {b.shape}"
    if a.ndim == 1:
        a = a[None, :]
    if b.ndim == 1:
        b = b[None, :]
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"{shapes}: expected [runs, n] arrays over the same n examples")
    if a.shape[1] == 0 or a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError(f"{shapes}: need at least one run and one example on each side")
    return a.astype(np.float64), b.astype(np.float64)


def _run_mean(accuracy: np.ndarray, picks: np.ndarray | None) -> np.ndarray:
    """Mean over (resampled) runs of [replicates, runs] accuracies."""
    if picks is None:
        return accuracy.mean(axis=1)
    return np.take_along_axis(accuracy, picks, axis=1).mean(axis=1)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
