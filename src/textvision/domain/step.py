"""The `domain_shift` step: how far the text images are from the natural photographs an ImageNet
backbone was trained on, at the pixels that reach its frozen slice and at the slice's outputs.

Pixel level: the distribution of input values (text images raw, after the paper's scalar
Z-normalisation, after per-pixel normalisation; natural crops after ImageNet's normalisation).
Feature level, per slice (the configured weights and random weights, the no-transfer reference
point) and input variant: the Fréchet distance between the slice's outputs, average-pooled over
space, on text and natural images; and, where the slice's BatchNorm layers hold real running
statistics, the mean over channels of KL(N(text) || N(running)) of each layer's input. The
variant `adapted` re-estimates the BatchNorm statistics on the text images first (AdaBN, as
`training.batchnorm: adapt` does) and is compared with the unadapted slice's natural features.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from textvision.config.settings import DomainSettings
from textvision.core.backbones import parse_backbone
from textvision.core.device import resolve_device
from textvision.core.errors import InputError
from textvision.core.io import attrs_dict, check_finite, decode, open_h5, verify_sealed, write_json
from textvision.core.registry import DOMAIN_INPUTS, RANDOM_WEIGHTS, TEXT_VARIANTS
from textvision.domain.figures import write_domain_figures
from textvision.domain.reference import imagenet_normalise, load_reference
from textvision.domain.statistics import (
    BATCH,
    FOLDED,
    NO_BATCHNORM,
    RANDOM_INIT,
    RUNNING,
    batchnorm_divergence,
    batchnorm_status,
    frechet_distance,
    slice_statistics,
)
from textvision.models.network import (
    InputAdapter,
    adapt_batchnorm,
    build_backbone,
)

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 40
DIGITS = 6  # significant digits of every number written: the same on any thread count


# --- distances ----------------------------------------------------------------------------------


# --- a slice's outputs and BatchNorm inputs -----------------------------------------------------


# --- inputs -------------------------------------------------------------------------------------


def load_text_sample(images: str | Path, max_images: int, seed: int) -> dict:
    """At most `max_images` training images (seeded sample, file order) with the training
    statistics of both normalisations."""
    verify_sealed(images, "render_images")
    with open_h5(images, "images", "split", "pixel_mean", "pixel_std") as fh:
        attrs = attrs_dict(fh)
        train = np.flatnonzero(decode(fh["split"][:]) == "train")
        if not len(train):
            raise InputError(f"{images}: no training rows (split == 'train') to compare")
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(train, size=min(max_images, len(train)), replace=False))
        x = fh["images"][rows]
        pixels = attrs.get("pixels")
        if x.shape[1:] != (pixels, pixels):
            raise InputError(
                f"{images}: images of shape {x.shape[1:]}, the file's attribute says "
                f"{pixels}x{pixels} pixels"
            )
        check_finite(x, images, "images", rows)
        return {
            "images": x,
            "n_train": int(len(train)),
            "pixels": int(pixels),
            "adapter": {
                "zscore": (attrs["mu"], attrs["sigma"], attrs["eps"]),
                "pixel": (fh["pixel_mean"][:], fh["pixel_std"][:], attrs["eps"]),
                "raw": (0.0, 1.0, 0.0),
            },
        }


def text_adapters(text: dict, upsample: int) -> dict[str, InputAdapter]:
    """The input adapter of each text variant (1 -> 3 channels, nearest upsampling)."""
    return {name: InputAdapter(*text["adapter"][name], upsample=upsample) for name in TEXT_VARIANTS}


@dataclass
class Inputs:
    """Text images with their adapters and the normalised natural crops, fed in batches."""

    text: torch.Tensor  # [n, P, P]
    adapters: dict[str, InputAdapter]
    natural: torch.Tensor  # [m, 3, S, S], ImageNet-normalised
    device: torch.device

    def text_batches(self, variant: str) -> Iterator[torch.Tensor]:
        adapter = self.adapters[variant].to(self.device)
        for lo in range(0, len(self.text), BATCH):
            yield adapter(self.text[lo : lo + BATCH].to(self.device))

    def natural_batches(self) -> Iterator[torch.Tensor]:
        for lo in range(0, len(self.natural), BATCH):
            yield self.natural[lo : lo + BATCH].to(self.device)


# --- pixel level --------------------------------------------------------------------------------


def value_summary(values: np.ndarray, empty: np.ndarray) -> dict:
    """Mean, std, skew, fraction of exact zeros, fraction of empty positions (raw value exactly
    0: DeepInsight's empty pixels) and a histogram (edges from the 0.1 to the 99.9 percentile,
    values beyond counted in the end bins) of input values."""
    values = np.asarray(values, dtype=np.float64).ravel()
    mean, std = float(values.mean()), float(values.std())
    skew = float(((values - mean) ** 3).mean() / std**3) if std > 0 else 0.0
    lo, hi = np.quantile(values, [0.001, 0.999])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=HISTOGRAM_BINS, range=(lo, hi))
    return {
        "mean": mean,
        "std": std,
        "skew": skew,
        "min": float(values.min()),
        "max": float(values.max()),
        "zero_fraction": float((values == 0).mean()),
        "empty_fraction": float(np.asarray(empty).mean()),
        "n_values": int(values.size),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def pixel_level(text: dict, natural_raw: torch.Tensor, natural: torch.Tensor) -> dict:
    """The input values of every variant as the backbone receives them (upsampling repeats
    values, so it is left out here)."""
    x = torch.from_numpy(text["images"])
    empty = text["images"] == 0
    out = {}
    with torch.no_grad():
        for name, adapter in text_adapters(text, upsample=1).items():
            values = adapter(x)[:, 0].numpy()
            out[name] = {
                "description": DOMAIN_INPUTS[name].description,
                **value_summary(values, empty),
            }
    out["natural"] = {
        "description": DOMAIN_INPUTS["natural"].description,
        **value_summary(natural.numpy(), natural_raw.numpy() == 0),
    }
    return out


# --- feature level ------------------------------------------------------------------------------


def _variant(
    features: np.ndarray, natural: np.ndarray, body: nn.Module, stats: dict, status: str
) -> dict:
    """Fréchet distance (also relative to the natural features' total variance, Tr(S), so that
    slices and variants whose features differ in scale compare) and BatchNorm divergence."""
    frechet = frechet_distance(features, natural)
    with threadpool_limits(limits=1):
        spread = float(np.var(natural, axis=0, ddof=1).sum())  # Tr(S_natural)
    result = {"frechet": frechet, "frechet_relative": frechet / spread if spread > 0 else None}
    if status != RUNNING:
        return {**result, "bn_kl": status}
    layers = batchnorm_divergence(body, stats)
    return {**result, "bn_kl": float(np.mean(list(layers.values()))), "bn_kl_layers": layers}


def _adapted(body: nn.Module, inputs: Inputs, natural: np.ndarray, status: str) -> dict:
    """The Z-normalised text images through the slice adapted on them, against the natural
    crops through the slice as loaded (its home statistics) or, for random weights, which have
    none, through the slice adapted on the natural crops (each domain with its own statistics,
    as AdaBN)."""
    if status in (NO_BATCHNORM, FOLDED):
        return {"frechet": f"{status}: nothing to adapt", "bn_kl": status}
    adapted = copy.deepcopy(body)
    adapt_batchnorm(adapted, inputs.text_batches("zscore"))
    features, stats = slice_statistics(adapted, inputs.text_batches("zscore"))
    against = "natural crops through the slice as loaded"
    if status == RANDOM_INIT:
        on_natural = copy.deepcopy(body)
        adapt_batchnorm(on_natural, inputs.natural_batches())
        natural = slice_statistics(on_natural, inputs.natural_batches())[0]
        against = "natural crops through the slice adapted on them"
    return {**_variant(features, natural, adapted, stats, RUNNING), "compared_with": against}


def compare_slice(body: nn.Module, weights: str, inputs: Inputs) -> dict:
    """Fréchet distances and BatchNorm divergences of every text variant against the natural
    crops, through one slice; and the distance between two halves of the natural crops (the
    sampling noise floor)."""
    body = body.to(inputs.device).eval()
    status = batchnorm_status(body, weights)
    natural, _ = slice_statistics(body, inputs.natural_batches())
    variants = {}
    for name in TEXT_VARIANTS:
        features, stats = slice_statistics(body, inputs.text_batches(name))
        variants[name] = _variant(features, natural, body, stats, status)
    variants["adapted"] = _adapted(body, inputs, natural, status)
    half = len(natural) // 2
    return {
        "weights": weights,
        "role": "random init (no transfer)" if weights == RANDOM_WEIGHTS else "configured",
        "batchnorm": status,
        "feature_dim": int(natural.shape[1]),
        "natural_halves_frechet": frechet_distance(natural[:half], natural[half:]),
        "variants": variants,
    }


def figure_sample(text: dict, inputs: Inputs) -> dict[str, np.ndarray]:
    """The first sampled text image through each normalisation (`[P, P]`) and as the backbone
    receives it (`[S, S]`), and the first natural crop as it receives it (`[3, S, S]`)."""
    first = torch.from_numpy(text["images"][:1])
    with torch.no_grad():
        sample = {
            name: adapter(first)[0, 0].numpy()
            for name, adapter in text_adapters(text, upsample=1).items()
        }
        sample["received"] = inputs.adapters["zscore"].cpu()(first)[0, 0].numpy()
    return {**sample, "natural": inputs.natural[0].numpy()}


def _rounded(obj):
    if isinstance(obj, float):
        return float(f"{obj:.{DIGITS}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return obj


def _slices(backbone: str, settings: DomainSettings, inputs: Inputs) -> list[dict]:
    """The configured weights' slice, then random weights' (unless those are the configured)."""
    out = []
    for weights in dict.fromkeys([settings.weights, RANDOM_WEIGHTS]):
        torch.manual_seed(settings.seed)  # random weights: the same slice on every run
        body = build_backbone(backbone, weights).body
        log.info("%s (weights %s): comparing text and natural images", backbone, weights)
        out.append(compare_slice(body, weights, inputs))
    return out


def _text_info(images: str | Path, text: dict, settings: DomainSettings) -> dict:
    return {
        "images": str(images),
        "split": "train",
        "n_images": int(len(text["images"])),
        "n_train": text["n_train"],
        "seed": settings.seed,
        "pixels": text["pixels"],
        "upsample": settings.upsample,
    }


def domain_shift(
    images: str | Path,
    out_json: str | Path,
    outdir: str | Path,
    settings: DomainSettings,
    *,
    backbone: str,
) -> dict:
    """Measure the domain shift between text images and natural photographs for one backbone.

    Args:
        images: `images.h5` (sealed by `render_images`); text images are sampled from its
            training split.
        out_json: the JSON to write: reference and sample used, input values per variant,
            Fréchet distances and BatchNorm divergences per slice and variant, figure names.
        outdir: folder of the figures `{backbone}_{inputs,normalisation,histograms,frechet}.png`.
        settings: `DomainSettings` (reference, sample sizes, seed, weights, upsampling, device).
        backbone: registry name, e.g. `resnet18@layer2`.
    """

    tic = time.perf_counter()
    arch, _ = parse_backbone(backbone)
    text = load_text_sample(images, settings.max_images, settings.seed)
    size = text["pixels"] * settings.upsample
    natural_raw, reference = load_reference(
        settings.reference, settings.n_reference, size, settings.seed
    )
    natural = imagenet_normalise(natural_raw)
    dev = resolve_device(settings.device)
    inputs = Inputs(
        torch.from_numpy(text["images"]), text_adapters(text, settings.upsample), natural, dev
    )
    result = {
        "backbone": backbone,
        "architecture": arch,
        "weights": settings.weights,
        "reference": reference,
        "text": _text_info(images, text, settings),
        "input_size": size,
        "device": str(dev),
        "variant_descriptions": {name: spec.description for name, spec in DOMAIN_INPUTS.items()},
        "pixel_level": pixel_level(text, natural_raw, natural),
        "slices": _slices(backbone, settings, inputs),
    }
    result = _rounded(result)
    result["figures"] = write_domain_figures(result, figure_sample(text, inputs), Path(outdir))
    result["seconds"] = time.perf_counter() - tic
    write_json(out_json, result)
    return result
