"""A bundle as a model: `Bundle` rebuilds the encoder and the bundle's classifier (one of the
kinds in `KINDS`) and classifies raw texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from textvision.bundle.image import ImageClassifier
from textvision.bundle.logistic import LogisticClassifier
from textvision.bundle.store import load_tensors, read_meta
from textvision.core.errors import InputError
from textvision.data.tables import clean_texts
from textvision.embed.encoder import (
    check_precision,
    embed_texts,
    layer_indices,
    load_encoder,
    resolve_model,
    weights_hash,
)

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
        return cls.reshape(len(cls), int(np.prod(cls.shape[1:])))

    def predict_proba(self, texts: list[str], progress=None) -> np.ndarray:
        """Class probabilities `[len(texts), classes]` of raw texts (HTML line breaks removed
        first where the training data had them removed)."""
        texts = clean_texts(texts, self.clean_html)
        return self.classifier.predict_proba(self.embed(texts, progress))


def load_bundle(folder: str | Path, device: str = "cpu", batch_size: int = 32) -> Bundle:
    """The bundle in `folder`, checked (version, tensors sha256, shapes, encoder weights)."""
    return Bundle(folder, str(device), batch_size)
