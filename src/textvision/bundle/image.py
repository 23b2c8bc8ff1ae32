"""Bundle kind `cnn`: DeepInsight's fitted transform and the trained network (adapter, frozen
slice, head, classifier), packed into a bundle's tensors and rebuilt from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from textvision.bundle.store import TENSORS, check_shape, encoder_meta, require_tensors
from textvision.core.backbones import parse_backbone
from textvision.core.device import autocast
from textvision.core.errors import InputError
from textvision.core.io import file_sha256
from textvision.core.registry import IMAGENET, RANDOM_WEIGHTS, is_weights_file
from textvision.deepinsight.base import PixelMapTransformer
from textvision.deepinsight.functional import feature_counts
from textvision.deepinsight.methods import get_method
from textvision.models.network import (
    InputAdapter,
    TextVisionNet,
    build_backbone,
    build_head,
    place,
)


def _transformer(folder: Path, meta: dict, tensors: dict) -> PixelMapTransformer:
    info = meta["deepinsight"]
    n, pixels = info["n_features"], info["pixels"]
    require_tensors(folder, tensors, ("deepinsight.pixels", "deepinsight.feature_counts"))
    check_shape(folder, "deepinsight.pixels", tensors["deepinsight.pixels"], (n, 2))
    counts = tensors["deepinsight.feature_counts"]
    check_shape(folder, "deepinsight.feature_counts", counts, (pixels, pixels))
    where = tensors["deepinsight.pixels"]
    if (
        where.min() < 0
        or where.max() >= pixels
        or not np.array_equal(counts, feature_counts(where, pixels))
    ):
        raise InputError(f"{folder / TENSORS}: DeepInsight pixels and counts disagree")
    transformer = get_method(info["method"])(**info["params"])
    transformer.pixels_, transformer.feature_counts_ = where, counts
    prefix = "deepinsight.scale."
    scale = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    for key, value in scale.items():
        if value.shape not in ((), (n,)):
            check_shape(folder, prefix + key, value, (n,))
    transformer.scale_ = {k: v[()] if v.shape == () else v for k, v in scale.items()}
    transformer.n_features_in_ = n
    return transformer


def _network(folder: Path, meta: dict, tensors: dict) -> TextVisionNet:
    info, backbone = meta["input"], meta["backbone"]
    arch, spec = parse_backbone(backbone["name"])
    stored = backbone["slice_stored"]
    require_tensors(folder, tensors, ("net.adapter.mu", "net.adapter.sigma"))
    pixels = meta["deepinsight"]["pixels"]
    for name in ("net.adapter.mu", "net.adapter.sigma"):
        if tensors[name].shape not in ((), (pixels, pixels)):
            check_shape(folder, name, tensors[name], (pixels, pixels))
    adapter = InputAdapter(
        tensors["net.adapter.mu"],
        tensors["net.adapter.sigma"],
        info["eps"],
        upsample=info["upsample"],
        per_batch=info["normalization"] == "batch",
    )
    net = TextVisionNet(
        adapter,
        build_backbone(backbone["name"], RANDOM_WEIGHTS if stored else IMAGENET),
        *build_head(arch, spec.channels, len(meta["class_names"])),
    )
    expected = {
        k: v for k, v in net.state_dict().items() if stored or not k.startswith("backbone.")
    }
    given = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    if set(given) != set(expected):
        odd = sorted(set(given) ^ set(expected))
        raise InputError(f"{folder / TENSORS}: network tensors do not match the network: {odd[:3]}")
    for key, value in expected.items():
        check_shape(folder, f"net.{key}", given[key], value.shape)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in given.items()}, strict=False)
    return net.eval()


@dataclass
class ImageClassifier:
    """Kind `cnn`: DeepInsight's fitted transform, then the trained network (adapter, frozen
    slice, head, classifier) on `device`."""

    KIND: ClassVar[str] = "cnn"
    transformer: PixelMapTransformer
    net: TextVisionNet
    device: torch.device
    batch_size: int  # rows per forward pass (with per-batch normalisation: the training batch)
    precision: str  # the training job's arithmetic
    n_classes: int

    @staticmethod
    def pack(net, attrs: dict, transformer, settings: dict) -> tuple[dict, dict]:
        """(meta, tensors) of a trained network (best epoch's weights loaded), the images'
        attributes and the fitted DeepInsight transformer; `settings` are the training job's
        recorded ones."""
        weights = settings["weights"]
        referenced = (
            weights == IMAGENET
            and settings["batchnorm"] == "frozen"
            and settings["trainable"] == "none"
        )
        if is_weights_file(weights):
            identifier, sha = Path(weights).name, file_sha256(weights)
        else:
            identifier, sha = weights, None
        params = {k: v for k, v in transformer.get_params().items() if k != "n_jobs"}
        meta = {
            "kind": ImageClassifier.KIND,
            "class_names": list(attrs["label_names"]),
            "encoder": encoder_meta(attrs),
            "deepinsight": {
                "method": transformer.method,
                "params": params,
                "n_features": int(transformer.n_features_in_),
                "scaler": transformer.scaler,
                "pixels": int(transformer.pixels),
                "discretization": transformer.discretization,
                "layout": transformer.layout,
            },
            "input": {
                "normalization": settings["normalization"],
                "eps": float(attrs["eps"]),
                "upsample": int(settings["upsample"]),
            },
            "backbone": {
                "name": settings["backbone"],
                "weights": identifier,
                "weights_sha256": sha,
                "batchnorm": settings["batchnorm"],
                "trainable": settings["trainable"],
                "slice_stored": not referenced,
            },
            "training": {
                k: settings[k]
                for k in ("seed", "epochs", "batch_size", "lr_head", "lr_classifier", "precision")
            },
        }
        tensors = {
            "deepinsight.pixels": transformer.pixels_,
            "deepinsight.feature_counts": transformer.feature_counts_,
            **{f"deepinsight.scale.{k}": v for k, v in transformer.scale_.items()},
        }
        for key, value in net.state_dict().items():
            if not (referenced and key.startswith("backbone.")):
                tensors[f"net.{key}"] = value
        return meta, tensors

    @classmethod
    def load(cls, folder: Path, meta: dict, tensors: dict, device: torch.device, batch_size: int):
        """The classifier of a bundle's tensors, each checked against `meta`."""
        if meta["input"]["normalization"] == "batch":  # statistics of the training batches
            batch_size = meta["training"]["batch_size"]
        net = place(_network(folder, meta, tensors), device)
        transformer = _transformer(folder, meta, tensors)
        precision, n_classes = meta["training"]["precision"], len(meta["class_names"])
        return cls(transformer, net, device, batch_size, precision, n_classes)

    @property
    def n_features(self) -> int:
        return int(self.transformer.n_features_in_)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if not len(X):  # scikit-learn's checks refuse no rows
            return np.zeros((0, self.n_classes), np.float32)
        images = self.transformer.transform(X)
        out = []
        with torch.no_grad(), autocast(self.precision, self.device):
            for lo in range(0, len(images), self.batch_size):
                batch = torch.from_numpy(images[lo : lo + self.batch_size]).to(self.device)
                out.append(torch.softmax(self.net(batch).float(), 1).cpu().numpy())
        return np.concatenate(out)
