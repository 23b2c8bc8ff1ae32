"""Train one backbone with one seed: slice (frozen or fine-tuned) + head + classifier, metrics
every epoch."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from textvision.bundle.image import ImageClassifier
from textvision.bundle.store import write_bundle
from textvision.config.settings import TrainSettings
from textvision.core.backbones import parse_backbone
from textvision.core.device import autocast, resolve_device, training_precision
from textvision.core.errors import InputError
from textvision.core.io import (
    atomic_path,
    file_sha256,
    nearest_existing,
    remove_empty_folders,
    verify_sealed,
    write_json,
)
from textvision.core.registry import is_weights_file
from textvision.core.threads import limit_threads
from textvision.deepinsight.base import PixelMapTransformer
from textvision.deepinsight.images import Images, load_images
from textvision.deepinsight.store import load_mapping
from textvision.models.network import (
    InputAdapter,
    TextVisionNet,
    adapt_batchnorm,
    build_backbone,
    build_head,
    check_adaptable,
    check_input_size,
    place,
)
from textvision.train.figures import plot_learning_curve
from textvision.train.metrics import classification_metrics
from textvision.train.predictions import prediction_table, write_predictions

log = logging.getLogger(__name__)


def _batches(n: int, batch_size: int, generator: torch.Generator | None = None):
    """Batches of `batch_size` rows (shuffled with `generator`); a last batch of one row joins
    the one before it (BatchNorm in training mode cannot normalise a single 1x1 map)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


class FeatureSource:
    """The slice's outputs for a split (under `autocast`, `device.autocast`): computed once and
    cached when the slice is frozen and they fit in the memory budget (normalisation by training
    statistics only), else computed per batch (with gradients where the slice trains)."""

    def __init__(
        self,
        net: TextVisionNet,
        images: torch.Tensor,
        cache: bool,
        batch_size: int,
        device: torch.device,
        autocast,
    ):
        self.net, self.images, self.device, self.autocast = net, images, device, autocast
        self.cached = None
        if cache and len(images):
            with autocast:
                parts = [
                    net.features(images[i : i + batch_size].to(device)).cpu()
                    for i in range(0, len(images), batch_size)
                ]
            self.cached = torch.cat(parts)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.cached is not None:
            return self.cached[idx].to(self.device)
        with self.autocast:
            return self.net.features(self.images[idx].to(self.device))


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
    """One epoch of steps of the trained parts (head, classifier, the slice where it trains);
    (loss sum, correct)."""
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


def build_network(
    data: Images, images: str | Path, backbone: str, settings: TrainSettings
) -> tuple[TextVisionNet, tuple[int, ...]]:
    """Adapter (normalisation, upsampling) -> frozen slice -> fresh head and classifier; the
    slice's map shape for one image."""
    attrs = data.attrs
    if settings.normalization == "pixel":
        if data.pixel_mean is None:
            raise InputError(
                f"{images}: no 'pixel_mean'/'pixel_std' datasets for normalization "
                "'pixel'; rerun the render_images step"
            )
        mu, sigma = data.pixel_mean, data.pixel_std
    else:
        mu, sigma = attrs["mu"], attrs["sigma"]
    arch, spec = parse_backbone(backbone)
    adapter = InputAdapter(
        mu,
        sigma,
        attrs["eps"],
        upsample=settings.upsample,
        per_batch=settings.normalization == "batch",
    )
    net = TextVisionNet(
        adapter,
        build_backbone(backbone, settings.weights, settings.trainable),
        *build_head(arch, spec.channels, len(attrs["label_names"])),
    )
    return net, check_input_size(net, attrs["pixels"])


def adapt_to_training_images(net: TextVisionNet, train_images: torch.Tensor, batch_size: int):
    """AdaBN on the training images, through the network's own input adapter; the slice is
    frozen (eval mode, no gradients) again afterwards."""
    dev = net.adapter.mu.device
    batches = (
        net.adapter(train_images[i : i + batch_size].to(dev))
        for i in range(0, len(train_images), batch_size)
    )
    n = adapt_batchnorm(net.backbone.body, batches)
    log.info("BatchNorm statistics of the slice re-estimated on %d training images", n)


@dataclass(frozen=True)
class Job:
    """What one training job works on: its images, the network on its device with its optimizer,
    each split's feature source and labels, the arithmetic (`amp`, `precision`) and the job's
    identity (backbone, seed) and loop settings."""

    data: Images
    dev: torch.device
    net: TextVisionNet
    maps: tuple[int, ...]  # the slice's map shape for one image
    cache: bool  # slice outputs computed once and kept
    optimizer: torch.optim.Optimizer
    sources: dict[str, FeatureSource]
    labels: dict[str, torch.Tensor]
    amp: object  # the autocast context of `precision`
    precision: str
    backbone: str
    seed: int
    epochs: int
    batch_size: int


@dataclass
class Run:
    """What the epoch loop carries: per-epoch history, the best epoch's weights, elapsed time."""

    history: list = field(default_factory=list)
    best: dict | None = None
    train_seconds: float = 0.0


def _split_tensors(data: Images, images: str | Path) -> dict:
    split = data.split
    tensors = {
        s: (
            torch.from_numpy(data.images[split == s]),
            torch.from_numpy(data.label[split == s]),
        )
        for s in ("train", "val", "test")
    }
    if len(tensors["val"][1]) == 0:
        raise InputError(f"{images}: no validation rows (split == 'val')")
    return tensors


def _checkpoint_state(identity: dict, net, optimizer, run: Run) -> dict:
    return {
        **identity,
        **{name: part.state_dict() for name, part in net.trained_parts().items()},
        "optimizer": optimizer.state_dict(),
        "history": run.history,
        "best": run.best,
        "train_seconds": run.train_seconds,
    }


def resume(checkpoint: Path, identity: dict, net, optimizer, dev) -> Run:
    """The run so far from `checkpoint` when it was written by the same job (same settings and
    images), else a fresh run."""
    if not checkpoint.exists():
        return Run()
    state = torch.load(checkpoint, map_location=dev, weights_only=True)
    changed = [key for key, value in identity.items() if state.get(key) != value]
    if changed:
        log.info(
            "checkpoint %s was written with other %s: starting afresh",
            checkpoint,
            " and ".join(key.removesuffix("_sha256") for key in changed),
        )
        return Run()
    for name, part in net.trained_parts().items():
        part.load_state_dict(state[name])
    optimizer.load_state_dict(state["optimizer"])
    settings = identity["settings"]
    log.info(
        "resuming %s seed %d from epoch %d",
        settings["backbone"],
        settings["seed"],
        len(state["history"]),
    )
    return Run(state["history"], state["best"], state["train_seconds"])


def _trained_state(net: TextVisionNet) -> dict:
    """A copy of the weights of every trained part, by part."""
    return {
        name: {k: v.detach().clone() for k, v in part.state_dict().items()}
        for name, part in net.trained_parts().items()
    }


def fit_epochs(job: Job, run: Run, checkpoint: Path, identity: dict) -> np.ndarray | None:
    """Train the remaining epochs, evaluating on validation after each, tracking the best epoch
    and writing a checkpoint; the last epoch's validation probabilities (None if none ran)."""
    net, optimizer, sources, autocast = job.net, job.optimizer, job.sources, job.amp
    y_train, y_val = job.labels["train"], job.labels["val"]
    epochs, seed, batch_size = job.epochs, job.seed, job.batch_size
    val_proba = None
    for epoch in range(len(run.history), epochs):
        torch.manual_seed(seed * 100_003 + epoch)  # dropout and order depend on (seed, epoch) only
        order = torch.Generator().manual_seed(seed * 100_003 + epoch)
        tic = time.perf_counter()
        desc = f"{job.backbone} epoch {epoch + 1}/{epochs}"
        loss_sum, correct = train_epoch(
            net, sources["train"], y_train, optimizer, batch_size, order, autocast, desc
        )
        seconds = time.perf_counter() - tic
        run.train_seconds += seconds
        val_loss, val_proba = _evaluate(net, sources["val"], y_val, batch_size, autocast)
        val_acc = float((val_proba.argmax(1) == y_val.numpy()).mean())
        run.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / len(y_train),
                "train_accuracy": correct / len(y_train),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "seconds": seconds,
            }
        )
        if run.best is None or val_acc > run.best["val_accuracy"]:
            run.best = {"epoch": epoch + 1, "val_accuracy": val_acc, **_trained_state(net)}
        log.info("%s seed %d epoch %d: %s", job.backbone, seed, epoch + 1, run.history[-1])
        with atomic_path(checkpoint) as tmp:
            torch.save(_checkpoint_state(identity, net, optimizer, run), tmp)
    return val_proba


def final_metrics(
    job: Job, run: Run, val_proba: np.ndarray | None
) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """Validation metrics of the last and the best epoch, test metrics of the best; the last
    epoch's weights; the best epoch's probabilities of each scored split (what `val_best` and
    `test_best` score). Leaves the best epoch's weights in the network."""
    net, sources, autocast, batch_size = job.net, job.sources, job.amp, job.batch_size
    labels = job.labels
    last = classification_metrics(
        labels["val"].numpy(),
        val_proba
        if val_proba is not None
        else _evaluate(net, sources["val"], labels["val"], batch_size, autocast)[1],
    )
    last_state = _trained_state(net)  # a copy: loading the best epoch overwrites the weights
    for name, part in net.trained_parts().items():
        part.load_state_dict(run.best[name])
    proba_best = {
        s: _evaluate(net, sources[s], labels[s], batch_size, autocast)[1]
        for s in ("val", "test")
        if len(labels[s])
    }
    best = {s: classification_metrics(labels[s].numpy(), p) for s, p in proba_best.items()}
    scores = {
        "val_accuracy_last": last["accuracy"],
        "val_accuracy_best": best["val"]["accuracy"],
        "best_epoch": run.best["epoch"],
        "val_last": last,
        "val_best": best["val"],
        "test_best": best.get("test"),
    }
    return scores, last_state, proba_best


def write_outputs(outdir: Path, metrics: dict, settings: dict, run: Run, last_state: dict) -> None:
    """`model.pt`, `history.csv`, `learning_curve.png`, then `metrics.json` (the rule's marker
    of a finished job)."""
    with atomic_path(outdir / "model.pt") as tmp:
        torch.save(
            {
                "settings": settings,
                "last": last_state,
                "best": {k: run.best[k] for k in ("epoch", *last_state)},
            },
            tmp,
        )
    with atomic_path(outdir / "history.csv") as tmp:
        pd.DataFrame(run.history).to_csv(tmp, index=False)
    weights = settings["weights"]
    label = Path(weights).name if is_weights_file(weights) else weights
    plot_learning_curve(
        run.history,
        outdir / "learning_curve.png",
        f"{settings['backbone']} (seed {settings['seed']}, weights {label})",
    )
    write_json(outdir / "metrics.json", metrics)


def check_mapping(mapping: str | Path, attrs: dict):
    """The fitted image transformer of `mapping`, which must be the one the images were
    rendered with (same method, grid and discretisation): checked before training."""
    transformer, _ = load_mapping(mapping)
    rendered = (attrs["method"], attrs["pixels"], attrs["discretization"])
    fitted = (transformer.method, transformer.pixels, transformer.discretization)
    if fitted != rendered:
        raise InputError(
            f"{mapping}: method {fitted[0]!r}, {fitted[1]}x{fitted[1]} pixels, discretization "
            f"{fitted[2]!r}; the images were rendered with {rendered[0]!r}, {rendered[1]}x"
            f"{rendered[1]}, {rendered[2]!r}: not their mapping"
        )
    return transformer


def write_bundle_files(
    outdir: Path, job: Job, transformer: PixelMapTransformer, recorded: dict
) -> None:
    """`bundle/`: everything needed to classify new texts with the best epoch."""
    meta, tensors = ImageClassifier.pack(job.net, job.data.attrs, transformer, recorded)
    write_bundle(outdir / "bundle", meta, tensors)


def _prepare_job(images, backbone: str, seed: int, settings: TrainSettings) -> Job:
    """Data, network, optimizer and feature sources of one training job."""
    data = load_images(images)
    dev = resolve_device(settings.device)
    torch.manual_seed(seed)
    net, maps = build_network(data, images, backbone, settings)
    verify_sealed(images, "render_images")
    place(net, dev)
    tensors = _split_tensors(data, images)
    if settings.batchnorm == "adapt":
        check_adaptable(net.backbone.body, backbone, settings.weights)
        adapt_to_training_images(net, tensors["train"][0], settings.batch_size)
    per_image_mb = 4 * float(np.prod(maps)) / 2**20
    n_cached = sum(len(y) for _, y in tensors.values())
    cache = (
        settings.trainable == "none"
        and settings.normalization != "batch"
        and per_image_mb * n_cached <= settings.cache_features_mb
    )
    batch_size = settings.batch_size
    precision = training_precision(settings.precision, dev)
    amp = autocast(precision, dev)
    groups = [
        {"params": net.head.parameters(), "lr": settings.lr_head},
        {"params": net.classifier.parameters(), "lr": settings.lr_classifier},
    ]
    trained = [p for p in net.backbone.parameters() if p.requires_grad]
    if trained:
        groups.append({"params": trained, "lr": settings.trainable_lr})
    optimizer = torch.optim.Adam(groups)
    return Job(
        data=data,
        dev=dev,
        net=net,
        maps=maps,
        cache=cache,
        optimizer=optimizer,
        sources={
            s: FeatureSource(net, x, cache, batch_size, dev, amp) for s, (x, _) in tensors.items()
        },
        labels={s: y for s, (_, y) in tensors.items()},
        amp=amp,
        precision=precision,
        backbone=backbone,
        seed=seed,
        epochs=settings.epochs,
        batch_size=batch_size,
    )


def train_backbone(
    images: str | Path,
    outdir: str | Path,
    settings: TrainSettings,
    *,
    backbone: str,
    seed: int,
    mapping: str | Path | None = None,
) -> dict:
    """Train one backbone with one seed, evaluate on the validation split after every epoch, and
    write `model.pt`, `metrics.json`, `history.csv`, `learning_curve.png` and
    `predictions.parquet` (the best epoch's validation and test predictions) into `outdir`; with
    the DeepInsight `mapping` the images were rendered with, also `bundle/` (the best epoch as a
    portable model, `textvision predict`).

    A `checkpoint.pt` written after every epoch lets a killed job resume where it stopped.
    Runs on `settings.threads` CPU threads, so that the result does not depend on the machine.
    """
    outdir = Path(outdir)
    existing = nearest_existing(outdir)
    try:
        with limit_threads(settings.threads):
            return _train(images, outdir, settings, backbone, seed, mapping)
    except BaseException:
        remove_empty_folders(outdir, existing)  # a refused job leaves no empty folder behind
        raise


def _recorded(settings: TrainSettings, job: Job) -> dict:
    """What a job's metrics, model and bundle record of its settings (and its resume identity)."""
    attrs = job.data.attrs
    return {
        "backbone": job.backbone,
        "weights": settings.weights,
        "lr_head": settings.lr_head,
        "lr_classifier": settings.lr_classifier,
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "seed": job.seed,
        "upsample": settings.upsample,
        "normalization": settings.normalization,
        "batchnorm": settings.batchnorm,
        "trainable": settings.trainable,
        "trainable_lr": settings.trainable_lr,
        "precision": job.precision,
        "method": attrs["method"],
        "discretization": attrs["discretization"],
        "layout": attrs["layout"],
        "n_classes": len(attrs["label_names"]),
        "feature_maps": int(job.maps[0]),
    }


def _train(
    images, outdir: Path, settings: TrainSettings, backbone: str, seed: int, mapping=None
) -> dict:
    outdir.mkdir(parents=True, exist_ok=True)
    job = _prepare_job(images, backbone, seed, settings)
    data, attrs = job.data, job.data.attrs
    transformer = check_mapping(mapping, attrs) if mapping is not None else None
    recorded = _recorded(settings, job)
    identity = {
        "settings": recorded,
        "images_sha256": hashlib.sha256(data.images.tobytes() + data.label.tobytes()).hexdigest(),
        "weights_sha256": file_sha256(settings.weights)
        if is_weights_file(settings.weights)
        else settings.weights,
    }
    checkpoint = outdir / "checkpoint.pt"
    run = resume(checkpoint, identity, job.net, job.optimizer, job.dev)
    val_proba = fit_epochs(job, run, checkpoint, identity)
    scores, last_state, proba_best = final_metrics(job, run, val_proba)
    n_train = len(job.labels["train"])
    metrics = {
        **recorded,
        "device": str(job.dev),
        "feature_cache": job.cache,
        **scores,
        "history": run.history,
        "train_seconds": run.train_seconds,
        "images_per_second": n_train * settings.epochs / max(run.train_seconds, 1e-9),
        "n_train": int(n_train),
        "n_val": int(len(job.labels["val"])),
        "n_test": int(len(job.labels["test"])),
        "label_names": attrs["label_names"],
        "synthetic": attrs.get("synthetic", False),
    }
    table = prediction_table(data.id, data.split, data.label, proba_best, attrs["label_names"])
    write_predictions(outdir / "predictions.parquet", table)
    if transformer is not None:
        write_bundle_files(outdir, job, transformer, recorded)
    write_outputs(outdir, metrics, recorded, run, last_state)
    checkpoint.unlink(missing_ok=True)
    return metrics
