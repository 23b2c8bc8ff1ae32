"""Train one backbone with one seed: frozen slice + head + classifier, metrics every epoch."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from textvision.backbones import build_backbone, parse_backbone
from textvision.device import resolve_device
from textvision.errors import InputError
from textvision.io import atomic_path, attrs_dict, check_finite, decode, open_h5, write_json
from textvision.metrics import classification_metrics
from textvision.models import InputAdapter, TextVisionNet, build_head, check_input_size

log = logging.getLogger(__name__)


def load_images(path: str | Path) -> dict:
    """Images, labels and splits from `images.h5`, checked against the file's own attributes."""
    with open_h5(path, "images", "label", "split") as fh:
        attrs = attrs_dict(fh)
        images = fh["images"][:]
        pixels = attrs.get("pixels")
        if images.ndim != 3 or images.shape[1:] != (pixels, pixels):
            raise InputError(
                f"{path}: dataset 'images' has shape {images.shape}; the mapping gives "
                f"{pixels}x{pixels} pixels (expected [N, {pixels}, {pixels}])"
            )
        check_finite(images, path, "images")
        stats = {k: fh[k][:] for k in ("pixel_mean", "pixel_std") if k in fh}
        return {
            **stats,
            "images": images,
            "label": fh["label"][:].astype(np.int64),
            "split": decode(fh["split"][:]),
            "attrs": attrs,
        }


def _batches(n: int, batch_size: int, generator: torch.Generator | None = None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class FeatureSource:
    """The frozen slice's outputs for a split: computed once and cached when they fit in the
    memory budget (normalisation by training statistics only), else computed per batch."""

    def __init__(
        self,
        net: TextVisionNet,
        images: torch.Tensor,
        cache: bool,
        batch_size: int,
        device: torch.device,
    ):
        self.net, self.images, self.device = net, images, device
        self.cached = None
        if cache and len(images):
            parts = [
                net.features(images[i : i + batch_size].to(device)).cpu()
                for i in range(0, len(images), batch_size)
            ]
            self.cached = torch.cat(parts)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.cached is not None:
            return self.cached[idx].to(self.device)
        return self.net.features(self.images[idx].to(self.device))


def place(net: TextVisionNet, dev: torch.device) -> TextVisionNet:
    """`net` on `dev`; on a CPU in channels-last layout (oneDNN's convolutions run faster)."""
    net.to(dev)
    if dev.type == "cpu":
        net.to(memory_format=torch.channels_last)
    return net


def train_epoch(
    net: TextVisionNet,
    source: FeatureSource,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    order: torch.Generator,
    autocast,
    desc: str = "train",
) -> tuple[float, int]:
    """One epoch of head and classifier steps on the frozen maps; (loss sum, correct)."""
    dev = next(net.head.parameters()).device
    net.train()
    loss_sum, correct = 0.0, 0
    for idx in tqdm(
        _batches(len(labels), batch_size, order),
        desc=desc,
        unit="batch",
        leave=False,
        mininterval=2,
    ):
        target = labels[idx].to(dev)
        with autocast:
            logits = net.classify(source(idx)).float()
        loss = nn.functional.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(idx)
        correct += (logits.argmax(1) == target).sum().item()
    return loss_sum, correct


def _evaluate(
    net: TextVisionNet, source: FeatureSource, labels: torch.Tensor, batch_size: int, autocast
) -> tuple[float, np.ndarray]:
    net.eval()
    losses, probas = [], []
    with torch.no_grad():
        for idx in _batches(len(labels), batch_size):
            with autocast:
                logits = net.classify(source(idx)).float()
            losses.append(
                nn.functional.cross_entropy(
                    logits, labels[idx].to(logits.device), reduction="sum"
                ).item()
            )
            probas.append(torch.softmax(logits, 1).cpu().numpy())
    return sum(losses) / len(labels), np.concatenate(probas)


def train_backbone(
    images: str | Path,
    outdir: str | Path,
    *,
    backbone: str,
    weights: str = "none",
    lr_head: float = 5e-5,
    lr_classifier: float = 1e-3,
    epochs: int = 15,
    batch_size: int = 32,
    seed: int = 0,
    upsample: int = 3,
    normalization: str = "train",
    device: str = "auto",
    cache_features_mb: int = 4096,
) -> dict:
    """Train, evaluate on the validation split after every epoch, and write `model.pt`,
    `metrics.json`, `history.csv` and `learning_curve.png` into `outdir`.

    A `checkpoint.pt` written after every epoch lets a killed job resume where it stopped.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data = load_images(images)
    attrs = data["attrs"]
    n_classes = len(attrs["label_names"])
    dev = resolve_device(device)
    torch.manual_seed(seed)
    arch, _ = parse_backbone(backbone)
    if normalization == "pixel":
        if "pixel_mean" not in data:
            raise InputError(
                f"{images}: no 'pixel_mean'/'pixel_std' datasets for normalization "
                "'pixel'; rerun the render_images step"
            )
        mu, sigma = data["pixel_mean"], data["pixel_std"]
    else:
        mu, sigma = attrs["mu"], attrs["sigma"]
    net = TextVisionNet(
        InputAdapter(mu, sigma, attrs["eps"], upsample, per_batch=normalization == "batch"),
        build_backbone(backbone, weights),
        *build_head(arch, parse_backbone(backbone)[1].channels, n_classes),
    )
    maps = check_input_size(net, attrs["pixels"])
    place(net, dev)
    split = data["split"]
    tensors = {
        s: (
            torch.from_numpy(data["images"][split == s]),
            torch.from_numpy(data["label"][split == s]),
        )
        for s in ("train", "val", "test")
    }
    if len(tensors["val"][1]) == 0:
        raise InputError(f"{images}: no validation rows (split == 'val')")
    per_image_mb = 4 * float(np.prod(maps)) / 2**20
    n_cached = sum(len(y) for _, y in tensors.values())
    cache = normalization != "batch" and per_image_mb * n_cached <= cache_features_mb
    sources = {s: FeatureSource(net, x, cache, batch_size, dev) for s, (x, _) in tensors.items()}
    optimizer = torch.optim.Adam(
        [
            {"params": net.head.parameters(), "lr": lr_head},
            {"params": net.classifier.parameters(), "lr": lr_classifier},
        ]
    )
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    settings = {
        "backbone": backbone,
        "weights": weights,
        "lr_head": lr_head,
        "lr_classifier": lr_classifier,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "upsample": upsample,
        "normalization": normalization,
        "n_classes": n_classes,
        "feature_maps": int(maps[0]),
    }
    fingerprint = hashlib.sha256(data["images"].tobytes() + data["label"].tobytes()).hexdigest()
    checkpoint = outdir / "checkpoint.pt"
    history, best, start_epoch, train_seconds = [], None, 0, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=dev, weights_only=True)
        if state["settings"] == settings and state["images_sha256"] == fingerprint:
            net.head.load_state_dict(state["head"])
            net.classifier.load_state_dict(state["classifier"])
            optimizer.load_state_dict(state["optimizer"])
            history, best = state["history"], state["best"]
            start_epoch, train_seconds = len(history), state["train_seconds"]
            log.info("resuming %s seed %d from epoch %d", backbone, seed, start_epoch)
    x_train, y_train = tensors["train"]
    y_val = tensors["val"][1]
    for epoch in range(start_epoch, epochs):
        torch.manual_seed(seed * 100_003 + epoch)  # dropout and order depend on (seed, epoch) only
        order = torch.Generator().manual_seed(seed * 100_003 + epoch)
        tic = time.perf_counter()
        loss_sum, correct = train_epoch(
            net,
            sources["train"],
            y_train,
            optimizer,
            batch_size,
            order,
            autocast,
            desc=f"{backbone} epoch {epoch + 1}/{epochs}",
        )
        seconds = time.perf_counter() - tic
        train_seconds += seconds
        val_loss, val_proba = _evaluate(net, sources["val"], y_val, batch_size, autocast)
        val_acc = float((val_proba.argmax(1) == y_val.numpy()).mean())
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / len(y_train),
                "train_accuracy": correct / len(y_train),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "seconds": seconds,
            }
        )
        if best is None or val_acc > best["val_accuracy"]:
            best = {
                "epoch": epoch + 1,
                "val_accuracy": val_acc,
                "head": {k: v.detach().clone() for k, v in net.head.state_dict().items()},
                "classifier": {
                    k: v.detach().clone() for k, v in net.classifier.state_dict().items()
                },
            }
        log.info("%s seed %d epoch %d: %s", backbone, seed, epoch + 1, history[-1])
        with atomic_path(checkpoint) as tmp:
            torch.save(
                {
                    "settings": settings,
                    "images_sha256": fingerprint,
                    "head": net.head.state_dict(),
                    "classifier": net.classifier.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                    "best": best,
                    "train_seconds": train_seconds,
                },
                tmp,
            )
    last = classification_metrics(
        y_val.numpy(),
        val_proba
        if epochs > start_epoch
        else _evaluate(net, sources["val"], y_val, batch_size, autocast)[1],
    )
    last_state = {"head": net.head.state_dict(), "classifier": net.classifier.state_dict()}
    net.head.load_state_dict(best["head"])
    net.classifier.load_state_dict(best["classifier"])
    best_metrics = classification_metrics(
        y_val.numpy(), _evaluate(net, sources["val"], y_val, batch_size, autocast)[1]
    )
    test = None
    if len(tensors["test"][1]):
        y_test = tensors["test"][1]
        test = classification_metrics(
            y_test.numpy(), _evaluate(net, sources["test"], y_test, batch_size, autocast)[1]
        )
    metrics = {
        **settings,
        "device": str(dev),
        "feature_cache": cache,
        "val_accuracy_last": last["accuracy"],
        "val_accuracy_best": best_metrics["accuracy"],
        "best_epoch": best["epoch"],
        "val_last": last,
        "val_best": best_metrics,
        "test_best": test,
        "history": history,
        "train_seconds": train_seconds,
        "images_per_second": len(y_train) * epochs / max(train_seconds, 1e-9),
        "n_train": int(len(y_train)),
        "n_val": int(len(y_val)),
        "label_names": attrs["label_names"],
        "synthetic": attrs.get("synthetic", False),
    }
    with atomic_path(outdir / "model.pt") as tmp:
        torch.save(
            {
                "settings": settings,
                "last": last_state,
                "best": {k: best[k] for k in ("epoch", "head", "classifier")},
            },
            tmp,
        )
    _write_history(history, outdir / "history.csv")
    from textvision.plots import plot_learning_curve

    plot_learning_curve(
        history,
        outdir / "learning_curve.png",
        f"{backbone} (seed {seed}, "
        f"weights {Path(weights).name if weights not in ('imagenet', 'none') else weights})",
    )
    write_json(outdir / "metrics.json", metrics)
    checkpoint.unlink(missing_ok=True)
    return metrics


def _write_history(history: list[dict], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)
