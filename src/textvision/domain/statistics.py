"""How far two sets of images are apart, at a frozen slice's inputs and outputs: the Fréchet
distance of Gaussian fits, the per-channel Gaussian KL of a slice's activations against its
BatchNorm running statistics, and what those statistics are (running, folded, random init,
absent)."""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from textvision.core.registry import RANDOM_WEIGHTS
from textvision.models.network import (
    batchnorm_layers,
    has_initial_statistics,
)

BATCH = 32  # images per forward pass


NO_BATCHNORM = "no BatchNorm"


RANDOM_INIT = "random init: no running statistics"


FOLDED = "folded BatchNorm: no running statistics"


RUNNING = "running statistics"


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr((S1 S2)^1/2) of two symmetric positive semi-definite matrices, as
    Tr((S1^1/2 S2 S1^1/2)^1/2): a symmetric product, so eigh suffices (no scipy)."""
    root = _psd_sqrt(s1)
    product = root @ s2 @ root
    values = np.linalg.eigvalsh((product + product.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of vectors (`[n, d]` each, rows
    are samples), as FID: |mu_a - mu_b|² + Tr(S_a + S_b - 2 (S_a S_b)^1/2). On one BLAS thread:
    the same bits on any machine's thread count."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"expected two [n >= 2, d] arrays of equal d, got {a.shape}, {b.shape}")
    with threadpool_limits(limits=1):
        s_a = np.atleast_2d(np.cov(a, rowvar=False))
        s_b = np.atleast_2d(np.cov(b, rowvar=False))
        mean_term = float(((a.mean(0) - b.mean(0)) ** 2).sum())
        cov_term = np.trace(s_a) + np.trace(s_b) - 2 * trace_sqrt_product(s_a, s_b)
    return max(mean_term + float(cov_term), 0.0)


def gaussian_kl(m1, v1, m2, v2) -> np.ndarray:
    """KL(N(m1, v1) || N(m2, v2)) elementwise (variances, not standard deviations)."""
    m1, v1, m2, v2 = (np.asarray(x, dtype=np.float64) for x in (m1, v1, m2, v2))
    return 0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)


def _accumulate(moments: list):
    def hook(module, args):
        x = args[0].detach().double()
        moments[0] += x.numel() // x.shape[1]
        moments[1] = moments[1] + x.sum(dim=(0, 2, 3))
        moments[2] = moments[2] + (x * x).sum(dim=(0, 2, 3))

    return hook


def slice_statistics(
    body: nn.Module, batches
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The slice's outputs average-pooled over space (`[n, channels]`, float64) and, for each
    BatchNorm layer, the per-channel mean and (population) variance of its input over all
    images and positions."""
    layers = batchnorm_layers(body)
    moments = {name: [0, 0.0, 0.0] for name in layers}
    handles = [m.register_forward_pre_hook(_accumulate(moments[n])) for n, m in layers.items()]
    pooled = []
    try:
        with torch.no_grad():
            for batch in batches:
                pooled.append(body(batch).double().mean(dim=(2, 3)).cpu().numpy())
    finally:
        for handle in handles:
            handle.remove()
    stats = {}
    for name, (count, s1, s2) in moments.items():
        mean = (s1 / count).cpu().numpy()
        stats[name] = (mean, np.maximum((s2 / count).cpu().numpy() - mean**2, 0.0))
    return np.concatenate(pooled), stats


def batchnorm_divergence(body: nn.Module, stats: dict) -> dict[str, float]:
    """Per BatchNorm layer: the mean over channels of KL(N(inputs) || N(running statistics)),
    both variances plus the layer's eps (what it divides by)."""
    out = {}
    for name, layer in batchnorm_layers(body).items():
        mean, var = stats[name]
        running_mean = layer.running_mean.detach().double().cpu().numpy()
        running_var = layer.running_var.detach().double().cpu().numpy()
        kl = gaussian_kl(mean, var + layer.eps, running_mean, running_var + layer.eps)
        out[name] = float(kl.mean())
    return out


def batchnorm_status(body: nn.Module, weights: str) -> str:
    """Whether the slice's BatchNorm layers hold statistics worth comparing with."""
    if not batchnorm_layers(body):
        return NO_BATCHNORM
    if weights == RANDOM_WEIGHTS:
        return RANDOM_INIT
    return FOLDED if has_initial_statistics(body) else RUNNING
