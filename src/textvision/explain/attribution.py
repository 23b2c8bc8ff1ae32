"""Explain a bundle's predictions: which words, which pixels, which BERT layers and features.

A bundle (`textvision.bundle.store`) is rebuilt here as one differentiable function from the input
token embeddings to the class scores: the encoder fed `inputs_embeds` (the tokenizer's ids looked
up in the word-embedding matrix; the model adds position and type embeddings as usual), the
`[CLS]` rows of the bundle's layers, DeepInsight's scaler in torch, its pixel means as a fixed
linear map, then the network (normalisation, upsampling, frozen slice, head, classifier); for a
logistic-regression bundle the standard scaler and the linear model. Its probabilities are the
bundle's own (`Bundle.predict_proba`) to float32 rounding.

Class scores are the logits centred over the classes (minus their mean: the same softmax,
without the shift common to all classes, which is no evidence for any; two-class logistic
regression gives `[-z/2, z/2]` of its decision value z).

Words: integrated gradients (Sundararajan et al. 2017) of one class score (the predicted class's
unless another is asked) with respect to the input token embeddings. A baseline keeps `[CLS]`
and `[SEP]` (and any other special token) as they are and has the input's length, so position
embeddings and attention span are the input's and special tokens get no attribution; at every
other position it puts either the `[PAD]` token's embedding or, with reference texts, a
training text's tokens in order, and the attributions are averaged over the references
(expected gradients, Erion et al. 2021). A `[PAD]` sequence lies far from every text a model
was trained on: on the synthetic corpus an image model scores 23 of 40 texts below their
`[PAD]` baseline for the very class it predicts, and the words share that swing; real texts
as baselines keep the path's ends among the training data. The path integral is a Gauss-Legendre
rule of `steps` nodes; completeness (the attributions sum to score(input) - score(baseline)) is
checked and a relative error above `COMPLETENESS_TOLERANCE` is logged as a warning. A token's
attribution is the sum over the embedding dimension; WordPiece pieces of a word are summed.

Pixels and features (image models): gradient x input of the class score on the image before
upsampling, shared among the features of each pixel by their share of its mean, which is the
gradient with respect to the scaled features times the scaled features; see
`feature_attributions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import nn

from textvision.bundle.image import ImageClassifier
from textvision.bundle.logistic import LogisticClassifier
from textvision.core.device import encoder_kernels
from textvision.core.errors import InputError
from textvision.data.tables import clean_texts
from textvision.deepinsight.functional_torch import (
    average_pixels,
    averaging_tensors,
    torch_scaler,
)
from textvision.deepinsight.params import validate_params
from textvision.embed.forward import BertCLSForward, bert_like
from textvision.embed.int8 import float_linears

log = logging.getLogger(__name__)

IG_STEPS = 16  # Gauss-Legendre nodes of the path integral (`explain.steps`)
COMPLETENESS_TOLERANCE = 0.05  # relative error of the attributions' sum that is warned about
IG_REFINE = 15  # bisections of a path's worst segment while the error is above the tolerance
IG_BATCH_TOKENS = 4096  # tokens (steps x text length) per forward and backward pass
FEATURE_BATCH = 64  # rows per backward pass of `feature_attributions`


# -- DeepInsight in torch ----------------------------------------------------------------------
class PixelAveraging(nn.Module):
    """`[B, n_features]` scaled features -> `[B, P, P]` images of a fitted
    `DeepInsightTransformer`: `functional_torch.average_pixels` with the transformer's
    `averaging_tensors` as buffers (its gradient is the averaging map's transpose)."""

    def __init__(self, transformer):
        super().__init__()
        size = int(transformer.pixels)
        pixel, weight, empty = averaging_tensors(transformer.pixels_, size, transformer.empty_value)
        self.register_buffer("pixel", pixel)
        self.register_buffer("weight", weight)
        self.register_buffer("empty", empty)
        self.pixels = size

    def forward(self, scaled: torch.Tensor) -> torch.Tensor:
        return average_pixels(scaled, self.pixel, self.weight, self.empty, self.pixels)


class _EmbedsCLSForward(BertCLSForward):
    """`BertCLSForward` (what `Bundle.predict_proba` runs on a CPU) from input embeddings."""

    def __call__(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        return self.from_embeddings(self.model.embeddings(inputs_embeds=inputs_embeds))


def _logreg_logits(scaler, logreg, device="cpu"):
    """The fitted StandardScaler + LogisticRegression as torch logits whose softmax is
    sklearn's `predict_proba`: two classes as `[-z/2, z/2]` of the decision value z."""

    def tensor(array) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, np.float32), device=device)

    mean, scale = tensor(scaler.mean_), tensor(scaler.scale_)
    coef, intercept = tensor(logreg.coef_), tensor(logreg.intercept_)

    def logits(x: torch.Tensor) -> torch.Tensor:
        z = ((x - mean) / scale) @ coef.T + intercept
        return torch.cat([-z / 2, z / 2], 1) if z.shape[1] == 1 else z

    return logits


class ImageHead:
    """A `cnn` bundle's classifier in torch: `[B, n_features]` -> DeepInsight's scaling
    (`scale`), pixel averaging (`averaging`) -> images `[B, P, P]` -> the network's logits, with
    gradients through its frozen slice too. Per-batch normalisation is refused: a text's score
    there depends on the other texts of its batch."""

    def __init__(self, classifier: ImageClassifier, folder: Path, device: torch.device):
        if classifier.net.adapter.per_batch:
            raise InputError(
                f"{folder}: trained with per-batch normalisation "
                "(training.normalization 'batch'): a text's score depends on the other texts "
                "of its batch, so it has no explanation of its own"
            )
        transformer = classifier.transformer
        self.scale = torch_scaler(transformer.scaler, transformer.scale_, device)
        self.averaging = PixelAveraging(transformer).to(device)
        self.net = classifier.net.eval()

    def images(self, features: torch.Tensor) -> torch.Tensor:
        """`[B, n_features]` -> DeepInsight images `[B, P, P]` (before normalisation)."""
        return self.averaging(self.scale(features))

    def image_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The network on images, with gradients through its frozen slice too."""
        net = self.net
        return net.classify(net.backbone.body(net.adapter(images))).float()

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return self.image_logits(self.images(features))


class LinearHead:
    """A `logreg` bundle's classifier in torch: StandardScaler + LogisticRegression logits."""

    def __init__(self, classifier: LogisticClassifier, folder: Path, device: torch.device):
        self.linear = _logreg_logits(classifier.scaler, classifier.logreg, device)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


HEADS = {ImageClassifier: ImageHead, LogisticClassifier: LinearHead}  # bundle kind -> torch


def _centred(logits: torch.Tensor) -> torch.Tensor:
    """Logits minus their mean over the classes: the same softmax, without the shift common to
    every class (which softmax ignores and training leaves free, so it is no evidence)."""
    return logits - logits.mean(1, keepdim=True)


# -- the whole path ----------------------------------------------------------------------------
@dataclass
class Tokens:
    """One text as the encoder sees it: ids, character spans (`(0, 0)` for special tokens), the
    word each token belongs to (None for special tokens) and which tokens are special."""

    text: str
    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]
    special: np.ndarray
    truncated: bool


class DifferentiablePath:
    """A loaded bundle as one differentiable function: input token embeddings `[B, T, H]` ->
    centred class scores `[B, classes]` (`logits`), whose softmax is `Bundle.predict_proba`.

    Args:
        bundle: a `textvision.bundle.store.Bundle`; its encoder's parameters stop requiring
            gradients (only the inputs' gradients are computed). Bundles with per-batch
            normalisation (`training.normalization: batch`) are refused: a text's score there
            depends on its batch. The path computes in float32, also for bundles whose encoder
            runs in bfloat16 or int8 (`embedding.precision`; int8: a float32 copy of the
            encoder): their probabilities then differ by that rounding.
    """

    def __init__(self, bundle):
        self.bundle = bundle
        self.class_names = list(bundle.class_names)
        self.tokenizer, encoder = bundle.tokenizer, bundle.encoder.requires_grad_(False)
        if bundle.meta["encoder"]["precision"] == "int8":
            encoder = float_linears(encoder).requires_grad_(False)
        self.encoder = encoder
        self.layers = list(bundle.layers)
        self.max_length = int(bundle.meta["encoder"]["max_length"])
        self.device = bundle.device
        self.plan = (
            _EmbedsCLSForward(self.encoder, self.layers) if bert_like(self.encoder) else None
        )
        self.head = HEADS[type(bundle.classifier)](bundle.classifier, bundle.folder, self.device)

    def tokenize(self, text: str) -> Tokens:
        """The bundle's tokenisation of one (already cleaned) text, truncated like `embed`."""
        enc = self.tokenizer(
            text,
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        full = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = list(enc["input_ids"])
        return Tokens(
            text=text,
            ids=ids,
            tokens=self.tokenizer.convert_ids_to_tokens(ids),
            offsets=[tuple(o) for o in enc["offset_mapping"]],
            word_ids=enc.word_ids(),
            special=np.asarray(enc["special_tokens_mask"], dtype=bool),
            truncated=full > len(ids) - int(np.sum(enc["special_tokens_mask"])),
        )

    def embed_tokens(self, ids: list[int]) -> torch.Tensor:
        """The word embeddings `[T, H]` of token ids (no position or type embeddings)."""
        table = self.encoder.get_input_embeddings()
        return table(torch.as_tensor(ids, device=self.device)).detach()

    def features(self, embeds: torch.Tensor) -> torch.Tensor:
        """`[B, T, H]` input embeddings (unpadded) -> `[B, layers * H]` flattened `[CLS]` rows."""
        with encoder_kernels("float32"):  # as `embed` computes float32
            if self.plan is not None:
                cls = self.plan(embeds)
            else:
                out = self.encoder(inputs_embeds=embeds, output_hidden_states=True)
                cls = torch.stack([out.hidden_states[i][:, 0] for i in self.layers], dim=1)
        return cls.flatten(1)

    def feature_logits(self, features: torch.Tensor) -> torch.Tensor:
        """`[B, n_features]` flattened `[CLS]` rows -> centred class scores."""
        return _centred(self.head(features))

    def logits(self, embeds: torch.Tensor) -> torch.Tensor:
        """`[B, T, H]` input embeddings -> class scores `[B, classes]`."""
        return self.feature_logits(self.features(embeds))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities of raw texts, one text at a time through this path."""

        out = []
        with torch.no_grad():
            for text in clean_texts(texts, self.bundle.clean_html):
                embeds = self.embed_tokens(self.tokenize(text).ids)[None]
                out.append(torch.softmax(self.logits(embeds), 1)[0].cpu().numpy())
        return np.stack(out) if out else np.zeros((0, len(self.class_names)), np.float32)


# -- words: integrated gradients ---------------------------------------------------------------
@dataclass
class TokenAttribution:
    """Integrated gradients of one text: per token (`tokens.tokens`) the attribution to the
    score of class `target`; `score - baseline_score` is what they should sum to, and
    `completeness_error` how far (relative) they are from it; `baselines`: how many reference
    texts the baseline score is the mean of (0: the `[PAD]` baseline)."""

    tokens: Tokens
    attributions: np.ndarray
    target: int
    proba: np.ndarray
    score: float
    baseline_score: float
    completeness_error: float
    steps: int
    baselines: int = 0


def _gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the Gauss-Legendre rule on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


def baseline_embeddings(
    path: DifferentiablePath, tokens: Tokens, reference: list[int] | None = None
) -> torch.Tensor:
    """The input's word embeddings with, at every non-special position, the `[PAD]` token's
    (`reference` None) or a reference text's token ids in order (`[PAD]` past its end)."""
    pad = path.tokenizer.pad_token_id
    if pad is None:
        raise InputError(f"encoder {path.bundle.meta['encoder']['model']!r} has no [PAD] token")
    ids = np.array(tokens.ids)
    fill = np.full(int((~tokens.special).sum()), pad)
    if reference is not None:
        n = min(len(reference), len(fill))
        fill[:n] = reference[:n]
    ids[~tokens.special] = fill
    return path.embed_tokens(ids.tolist())


def reference_tokens(path: DifferentiablePath, texts: list[str]) -> list[list[int]]:
    """The token ids of reference texts, special tokens left out: baselines for
    `integrated_gradients`."""
    out = []
    for text in texts:
        tokens = path.tokenize(text)
        out.append([i for i, s in zip(tokens.ids, tokens.special, strict=True) if not s])
    return out


@validate_params(
    {
        "steps": [Interval(Integral, 1, None, closed="left")],
        "batch_tokens": [Interval(Integral, 1, None, closed="left")],
        "refine": [Interval(Integral, 0, None, closed="left")],
    }
)
def integrated_gradients(
    path: DifferentiablePath,
    text: str,
    target: int | None = None,
    steps: int = IG_STEPS,
    batch_tokens: int = IG_BATCH_TOKENS,
    refine: int = IG_REFINE,
    references: list[list[int]] | None = None,
) -> TokenAttribution:
    """Integrated gradients of one text's class score with respect to its token embeddings.

    Args:
        path: the bundle's `DifferentiablePath`.
        text: the text, already cleaned as the bundle's training data was (`clean_html`).
        target: the class index whose score is explained; None: the predicted class.
        steps: Gauss-Legendre nodes on the straight path from the baseline to the input, and
            on each segment of it when the path is refined.
        batch_tokens: about this many tokens (path points x text length) per pass.
        refine: while a path's part of the completeness error is above its share of
            `COMPLETENESS_TOLERANCE`, its segment whose sum differs most from the score
            difference between its ends is bisected, at most this many times per path (a
            composite rule: the nodes go where the score changes fast).
        references: token ids of reference texts (`reference_tokens`): one baseline each (the
            text's length, its tokens in their place), the attributions averaged over them and
            their sum compared with score - mean baseline score (expected gradients, Erion et
            al. 2021); None or empty: the `[PAD]` baseline.

    Returns a `TokenAttribution` (`steps`: the nodes of the most refined path); its
    `completeness_error` may still be above the tolerance (the pages warn). Allowed values:
    `integrated_gradients._parameter_constraints`, checked on every call."""
    tokens = path.tokenize(text)
    x = path.embed_tokens(tokens.ids)
    bases = [baseline_embeddings(path, tokens, r) for r in (references or [None])]
    with torch.no_grad():
        ends = path.logits(torch.stack([x, *bases]))
    target = int(ends[0].argmax()) if target is None else int(target)
    if not 0 <= target < ends.shape[1]:
        raise InputError(f"class {target} out of range for {ends.shape[1]} classes")
    score, baseline = float(ends[0, target]), float(ends[1:, target].mean())
    # each path's share of the tolerance: their mean then errs by at most the tolerance
    allowed = COMPLETENESS_TOLERANCE * max(abs(score - baseline), 1e-6)
    rule = (steps, batch_tokens, refine)
    paths = [
        _refined_integral(path, (base, x), (float(low), score), target, rule, allowed)
        for base, low in zip(bases, ends[1:, target], strict=True)
    ]
    attributions = np.mean([values for values, _ in paths], axis=0)
    error = completeness_error(attributions.sum(), score - baseline)
    steps = max(nodes for _, nodes in paths)
    return TokenAttribution(
        tokens=tokens,
        attributions=attributions,
        target=target,
        proba=torch.softmax(ends[0], 0).cpu().numpy(),
        score=score,
        baseline_score=baseline,
        completeness_error=error,
        steps=steps,
        baselines=len(bases) if references else 0,
    )


def _refined_integral(path, line: tuple, scores: tuple, target: int, rule: tuple, allowed: float):
    """`_path_integral` on the path `line` (baseline, input) whose ends score `scores`, then on
    halves of its worst segment (the largest gap between its sum and the score difference
    between its ends) until the gaps add up to at most `allowed` or `rule`'s (steps,
    batch_tokens, refine) bisections are spent; (per-token values, nodes used)."""
    base, x = line
    steps, batch_tokens, refine = rule

    def score(alpha: float) -> float:
        with torch.no_grad():
            return float(path.logits((base + alpha * (x - base))[None])[0, target])

    def segment(a: float, b: float, ends: tuple[float, float]):
        values = _path_integral(path, x, base, target, steps, batch_tokens, (a, b))
        return values, abs(values.sum() - (ends[1] - ends[0])), ends

    segments = {(0.0, 1.0): segment(0.0, 1.0, scores)}
    for _ in range(refine):
        if sum(gap for _, gap, _ in segments.values()) <= allowed:
            break
        (a, b), (_, _, (low, high)) = max(segments.items(), key=lambda item: item[1][1])
        middle = (a + b) / 2
        mid = score(middle)
        del segments[(a, b)]
        segments[(a, middle)] = segment(a, middle, (low, mid))
        segments[(middle, b)] = segment(middle, b, (mid, high))
    values = sum(values for values, _, _ in segments.values())
    return values, steps * len(segments)


def _path_integral(
    path, x, base, target: int, steps: int, batch_tokens: int, span=(0.0, 1.0)
) -> np.ndarray:
    """Per token: (x - base) . the integral of the target score's gradient along the straight
    path from `base` to `x` over `span` of it (Gauss-Legendre, `steps` nodes)."""
    nodes, weights = _gauss_legendre(steps)
    a, b = span
    alphas = torch.as_tensor(a + (b - a) * nodes, dtype=x.dtype, device=x.device)
    weights = torch.as_tensor((b - a) * weights, dtype=x.dtype, device=x.device)
    total = torch.zeros_like(x)
    rows = max(1, batch_tokens // len(x))
    for lo in range(0, steps, rows):
        a = alphas[lo : lo + rows, None, None]
        points = (base + a * (x - base)).requires_grad_(True)
        scores = path.logits(points)[:, target]
        (grad,) = torch.autograd.grad((scores * weights[lo : lo + rows]).sum(), points)
        total += grad.sum(0)
    return ((x - base) * total).sum(-1).cpu().numpy().astype(np.float64)


def completeness_error(total: float, difference: float) -> float:
    """|sum of attributions - (score - baseline score)| relative to |score - baseline score|
    (absolute where that difference is below 1e-6)."""
    return abs(total - difference) / max(abs(difference), 1e-6)


def word_attributions(result: TokenAttribution):
    """Columns word, start, end (characters of the text), token_start, token_end (token indices,
    end exclusive) and attribution (the sum over the word's pieces), one row per word."""
    import pandas as pd

    tokens, rows = result.tokens, []
    for index, word in enumerate(tokens.word_ids):
        if word is None:
            continue
        start, end = tokens.offsets[index]
        if rows and rows[-1][0] == word:
            rows[-1][2], rows[-1][4] = end, index + 1
            rows[-1][5] += result.attributions[index]
        else:
            rows.append([word, start, end, index, index + 1, result.attributions[index]])
    frame = pd.DataFrame(
        rows, columns=["word_id", "start", "end", "token_start", "token_end", "attribution"]
    )
    frame.insert(
        0, "word", [tokens.text[s:e] for s, e in zip(frame["start"], frame["end"], strict=True)]
    )
    return frame.drop(columns="word_id")


# -- pixels, layers and features ---------------------------------------------------------------
@dataclass
class FeatureAttributions:
    """Gradient x input of image-model class scores, per class k over the rows labelled k, each
    row's attribution taken to the score of k: `mean`/`mean_abs` `[classes, n_features]` (the
    mean and the mean absolute attribution of each feature: gradient with respect to the scaled
    feature times the scaled feature), `pixel_mean` `[classes, P, P]` (gradient x input on the
    image before upsampling; a pixel's value is the sum over its features, plus, at empty
    pixels, gradient x `empty_value`), `counts` (rows per class), `proba` (`[rows, classes]`)."""

    class_names: list[str]
    mean: np.ndarray
    mean_abs: np.ndarray
    pixel_mean: np.ndarray
    counts: np.ndarray
    proba: np.ndarray


def feature_attributions(
    bundle, texts: list[str], labels, batch_size: int = FEATURE_BATCH, progress=None
) -> FeatureAttributions:
    """Per-class mean gradient x input of an image-model bundle over labelled texts.

    Args:
        bundle: a loaded CNN `Bundle` (a logistic-regression bundle has no image: refused).
        texts: raw texts, cleaned as `predict_proba` cleans them.
        labels: their class indices; each row is attributed to the score of its own class.
        batch_size: rows per backward pass (the encoder runs without gradients).
        progress: a tqdm bar the embedding step advances, or None.

    Returns a `FeatureAttributions` (with every row's probabilities)."""

    path = DifferentiablePath(bundle)
    head = path.head
    if not isinstance(head, ImageHead):
        raise InputError(
            f"{bundle.folder}: a {bundle.meta['kind']} bundle has no image to attribute"
        )
    labels = np.array(labels, dtype=np.int64)  # a copy torch may share
    k = len(path.class_names)
    if len(labels) != len(texts) or (len(labels) and not 0 <= labels.min() <= labels.max() < k):
        raise InputError(
            f"feature_attributions: {len(texts)} texts and {len(labels)} labels; expected one "
            f"class index in 0..{k - 1} per text"
        )
    texts = list(clean_texts(texts, bundle.clean_html))
    X = bundle.embed(texts, progress)
    n, size = X.shape[1], head.averaging.pixels
    sums = {"mean": np.zeros((k, n)), "mean_abs": np.zeros((k, n)), "pixel": np.zeros((k, size**2))}
    proba = []
    for lo in range(0, len(X), batch_size):
        rows = torch.as_tensor(labels[lo : lo + batch_size], device=path.device)
        scaled = head.scale(torch.from_numpy(X[lo : lo + batch_size]).to(path.device))
        scaled.requires_grad_(True)
        images = head.averaging(scaled)
        logits = _centred(head.image_logits(images))
        grads = torch.autograd.grad(logits.gather(1, rows[:, None]).sum(), [scaled, images])
        features = (grads[0] * scaled).detach().double().cpu().numpy()
        pixels = (grads[1] * images).detach().double().cpu().flatten(1).numpy()
        for name, values in (("mean", features), ("mean_abs", np.abs(features)), ("pixel", pixels)):
            np.add.at(sums[name], rows.cpu().numpy(), values)
        proba.append(torch.softmax(logits.detach(), 1).cpu().numpy())
    counts = np.bincount(labels, minlength=k)
    per = np.maximum(counts, 1)[:, None]
    return FeatureAttributions(
        class_names=path.class_names,
        mean=sums["mean"] / per,
        mean_abs=sums["mean_abs"] / per,
        pixel_mean=(sums["pixel"] / per).reshape(k, size, size),
        counts=counts,
        proba=np.concatenate(proba) if proba else np.zeros((0, k), np.float32),
    )
