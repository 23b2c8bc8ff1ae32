"""A bundle as a model: the two kinds of classifier a bundle holds (an image model: DeepInsight's
transform and the network; the logistic baseline), each packed into and rebuilt from the bundle's
tensors, and `Bundle`, which puts the encoder in front and classifies raw texts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from textvision.bundle.store import (
    TENSORS,
    check_shape,
    encoder_meta,
    load_tensors,
    read_meta,
    require_tensors,
)
from textvision.core.backbones import parse_backbone
from textvision.core.device import autocast
from textvision.core.errors import InputError
from textvision.core.io import file_sha256
from textvision.data.tables import clean_text
from textvision.deepinsight.transformer import DeepInsightTransformer, feature_counts
from textvision.embed.encoder import (
    check_precision,
    embed_texts,
    layer_indices,
    load_encoder,
    resolve_model,
    weights_hash,
)
from textvision.models.network import (
    InputAdapter,
    TextVisionNet,
    build_backbone,
    build_head,
    place,
)


def _transformer(folder: Path, meta: dict, tensors: dict) -> DeepInsightTransformer:
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
    transformer = DeepInsightTransformer(**info["params"])
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
        build_backbone(backbone["name"], "none" if stored else "imagenet"),
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
    transformer: DeepInsightTransformer
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
        referenced = weights == "imagenet" and settings["batchnorm"] == "frozen"
        if weights in ("imagenet", "none"):
            identifier, sha = weights, None
        else:
            identifier, sha = Path(weights).name, file_sha256(weights)
        params = {k: v for k, v in transformer.get_params().items() if k != "n_jobs"}
        meta = {
            "kind": ImageClassifier.KIND,
            "class_names": list(attrs["label_names"]),
            "encoder": encoder_meta(attrs),
            "deepinsight": {
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
        images = self.transformer.transform(X)
        out = []
        with torch.no_grad(), autocast(self.precision, self.device):
            for lo in range(0, len(images), self.batch_size):
                batch = torch.from_numpy(images[lo : lo + self.batch_size]).to(self.device)
                out.append(torch.softmax(self.net(batch).float(), 1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_classes), np.float32)


@dataclass
class LogisticClassifier:
    """Kind `logreg`: the baseline's StandardScaler and LogisticRegression on the flattened
    `[CLS]` vectors."""

    KIND: ClassVar[str] = "logreg"
    scaler: StandardScaler
    logreg: LogisticRegression
    _TENSORS: ClassVar[tuple[str, ...]] = (
        "scaler.mean",
        "scaler.scale",
        "logreg.coef",
        "logreg.intercept",
        "logreg.classes",
    )

    @staticmethod
    def pack(pipeline, attrs: dict) -> tuple[dict, dict]:
        """(meta, tensors) of the baseline's StandardScaler + LogisticRegression pipeline."""
        scaler, logreg = pipeline[0], pipeline[-1]
        meta = {
            "kind": LogisticClassifier.KIND,
            "class_names": list(attrs["label_names"]),
            "encoder": encoder_meta(attrs),
            "logreg": {"C": float(logreg.C), "n_features": int(scaler.n_features_in_)},
        }
        arrays = (scaler.mean_, scaler.scale_, logreg.coef_, logreg.intercept_, logreg.classes_)
        return meta, dict(zip(LogisticClassifier._TENSORS, arrays, strict=True))

    @classmethod
    def load(cls, folder: Path, meta: dict, tensors: dict, device: torch.device, batch_size: int):
        """The classifier of a bundle's tensors, each checked against `meta`."""
        names = cls._TENSORS
        require_tensors(folder, tensors, names)
        n, k = meta["logreg"]["n_features"], len(meta["class_names"])
        rows = 1 if k == 2 else k
        for name, shape in zip(names, ((n,), (n,), (rows, n), (rows,), (k,)), strict=True):
            check_shape(folder, name, tensors[name], shape)
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_ = tensors["scaler.mean"], tensors["scaler.scale"]
        scaler.var_, scaler.n_features_in_ = scaler.scale_**2, n
        logreg = LogisticRegression(C=meta["logreg"]["C"])
        logreg.coef_, logreg.intercept_ = tensors["logreg.coef"], tensors["logreg.intercept"]
        logreg.classes_, logreg.n_features_in_ = tensors["logreg.classes"], n
        return cls(scaler, logreg)

    @property
    def n_features(self) -> int:
        return int(self.scaler.n_features_in_)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.logreg.predict_proba(self.scaler.transform(X))


KINDS = {kind.KIND: kind for kind in (ImageClassifier, LogisticClassifier)}


class Bundle:
    """A loaded bundle: `predict_proba(texts)` -> `[n, classes]`, `class_names`; the encoder in
    front of its `classifier` (an `ImageClassifier` or a `LogisticClassifier`)."""

    def __init__(self, folder: str | Path, device: str = "cpu", batch_size: int = 32):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        self.class_names = list(self.meta["class_names"])
        self.clean_html = bool(self.meta["encoder"]["clean_html"])
        self.batch_size = batch_size
        self.device = torch.device(device)
        kind = KINDS.get(self.meta["kind"])
        if kind is None:
            raise InputError(
                f"{self.folder}: bundle kind {self.meta['kind']!r}; expected one of {list(KINDS)}"
            )
        tensors = load_tensors(self.folder)
        self.classifier = kind.load(self.folder, self.meta, tensors, self.device, batch_size)
        self._load_encoder(device)

    def _load_encoder(self, device: str) -> None:
        encoder = self.meta["encoder"]
        found = resolve_model(encoder["model"])
        sha = weights_hash(found)
        if sha != encoder["weights_sha256"]:
            raise InputError(
                f"{self.folder}: encoder {encoder['model']!r} found here ({found}) has other "
                f"weights (sha256 {sha[:12]}…) than the bundle was trained with "
                f"({str(encoder['weights_sha256'])[:12]}…)"
            )
        check_precision(encoder["precision"], device)
        self.tokenizer, self.encoder, _ = load_encoder(
            encoder["model"], device, encoder["precision"]
        )
        config = self.encoder.config
        self.layers = list(encoder["layers"])
        layer_indices(self.layers, config.num_hidden_layers)  # in range
        n_features = self.classifier.n_features
        if len(self.layers) * config.hidden_size != n_features:
            raise InputError(
                f"{self.folder}: {len(self.layers)} layers x {config.hidden_size} features of "
                f"{encoder['model']!r}, the bundle expects {n_features}"
            )

    def embed(self, texts: list[str], progress=None) -> np.ndarray:
        """The flattened `[CLS]` vectors `[len(texts), layers x hidden]` the classifier reads."""
        cls = embed_texts(
            list(texts),
            self.tokenizer,
            self.encoder,
            self.layers,
            max_length=self.meta["encoder"]["max_length"],
            batch_size=self.batch_size,
            precision=self.meta["encoder"]["precision"],
            progress=progress,
        )
        return cls.reshape(len(cls), -1)

    def predict_proba(self, texts: list[str], progress=None) -> np.ndarray:
        """Class probabilities `[len(texts), classes]` of raw texts (HTML line breaks removed
        first where the training data had them removed)."""
        if self.clean_html:
            texts = [clean_text(t) for t in texts]
        return self.classifier.predict_proba(self.embed(texts, progress))


def load_bundle(folder: str | Path, device: str = "cpu", batch_size: int = 32) -> Bundle:
    """The bundle in `folder`, checked (version, tensors sha256, shapes, encoder weights)."""
    return Bundle(folder, str(device), batch_size)
