"""The network of the paper: backbone slice (built from the registry, with its weights; frozen,
or fine-tuned) -> conv head ("CAE") -> dense classifier."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from textvision.core.backbones import Slice, parse_backbone
from textvision.core.errors import InputError
from textvision.core.paper import NORMALISATION_EPS
from textvision.core.registry import IMAGENET, RANDOM_WEIGHTS, is_weights_file


class SliceBackbone(nn.Module):
    """A backbone slice, frozen (`trainable="none"`, the paper's: no gradients, its outputs may be
    cached) or with its last block (`"last"`) or all of it (`"all"`) training. Always in eval
    mode: BatchNorm normalises with its running statistics, which never move (frozen
    statistics; folded-BatchNorm weight files require it); the affine parameters of a trained
    block's BatchNorm train with it."""

    def __init__(self, body: nn.Sequential, channels: int, trainable: str = "none"):
        super().__init__()
        self.body = body
        self.channels = channels
        self.trainable = trainable
        self.body.requires_grad_(False)
        for module in trained_blocks(body, trainable):
            module.requires_grad_(True)
        self.body.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.body.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.trainable == "none":
            with torch.no_grad():
                return self.body(x)
        return self.body(x)


def trained_blocks(body: nn.Sequential, trainable: str) -> list[nn.Module]:
    """The modules of a slice that `trainable` trains: none, the last child with weights, or
    the whole slice."""
    if trainable == "none":
        return []
    if trainable == "all":
        return [body]
    weighted = [m for m in body.children() if any(True for _ in m.parameters())]
    return weighted[-1:]


class InputAdapter(nn.Module):
    """1-channel image -> Z-normalised -> 3 channels -> nearest upsampling by `upsample`.

    `mu`/`sigma` are the training pixels' statistics: scalars (the paper's) or `[P, P]` maps
    (per-pixel, which removes the texture every DeepInsight image shares); `per_batch` uses the
    batch's own scalar statistics instead, as the original code did.
    """

    def __init__(
        self, mu, sigma, eps: float = NORMALISATION_EPS, *, upsample: int, per_batch: bool = False
    ):
        super().__init__()
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float32))
        self.register_buffer("sigma", torch.as_tensor(sigma, dtype=torch.float32))
        self.eps, self.upsample, self.per_batch = eps, upsample, per_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_batch:
            mu, sigma = x.mean(), x.std()
        else:
            mu, sigma = self.mu, self.sigma
        x = ((x - mu) / (sigma + self.eps)).unsqueeze(1).expand(-1, 3, -1, -1)
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return x


def batchnorm_layers(body: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of a slice with their running statistics, by module name."""
    return {
        name: module
        for name, module in body.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    }


def has_initial_statistics(body: nn.Module) -> bool:
    """Whether every BatchNorm of `body` holds running mean 0 and variance 1: a fresh layer's,
    or folded BatchNorm (the statistics were multiplied into the convolutions; exporters often
    store variance 1 - eps, so that the layer divides by exactly 1): no real running statistics
    either way. False for a slice without BatchNorm."""
    layers = batchnorm_layers(body).values()
    return bool(layers) and all(
        torch.all(m.running_mean == 0) and torch.all((m.running_var - 1).abs() <= 2 * m.eps)
        for m in layers
    )


def adapt_batchnorm(body: nn.Module, batches) -> int:
    """AdaBN (Li et al. 2016): re-estimate the running statistics of every BatchNorm of `body`
    from `batches` (the slice's inputs, as the adapter gives them), then leave them in eval mode.

    One pass without gradients or labels; each layer normalises with the batch's statistics as
    in training, and its running statistics become the cumulative average over all batches,
    each weighted by its number of images. Weights and BatchNorm affine parameters are not
    touched. Returns the number of images seen."""
    layers = batchnorm_layers(body)
    momenta = {name: m.momentum for name, m in layers.items()}
    for m in layers.values():
        m.reset_running_stats()
        m.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                seen += len(batch)
                for m in layers.values():
                    m.momentum = len(batch) / seen  # running = weighted mean of batch statistics
                body(batch)
    finally:
        for name, m in layers.items():
            m.momentum = momenta[name]
            m.eval()
    return seen


def _conv_block(c_in: int, c_out: int, kernel: int, dropout: float) -> list[nn.Module]:
    layers = [
        nn.Conv2d(c_in, c_out, kernel, padding=(kernel - 1) // 2),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(c_out),
    ]
    return layers + ([nn.Dropout2d(dropout)] if dropout else [])


def _dense(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def build_head(
    arch: str, channels: int, n_classes: int, dropout: float = 0.3
) -> tuple[nn.Sequential, nn.Sequential]:
    """(head, classifier) as in the original code: AlexNet's 4 convs of kernel 2 down to 64 maps,
    pooled to 5x5, dense 1600-700-50-K; the others' 4 convs of kernel 4 down to 32, pooled to
    10x10, dense 3200-1600-700-50-K. Xavier-initialised."""
    if arch == "alexnet":
        widths, kernel, pool, dense, conv_dropout = [192, 192, 192, 64], 2, 5, [700, 50], 0.0
    else:
        widths, kernel, pool, dense, conv_dropout = (
            [192, 128, 64, 32],
            4,
            10,
            [1600, 700, 50],
            dropout,
        )
    layers: list[nn.Module] = []
    for c_in, c_out in zip([channels, *widths[:-1]], widths, strict=True):
        layers += _conv_block(c_in, c_out, kernel, conv_dropout)
    head = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten())
    classifier = _dense([widths[-1] * pool * pool, *dense, n_classes], dropout)
    for module in (*head.modules(), *classifier.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return head, classifier


class TextVisionNet(nn.Module):
    """adapter -> backbone slice -> head -> classifier; head and classifier train, and the slice
    where its `trainable` says so."""

    def __init__(
        self,
        adapter: InputAdapter,
        backbone: SliceBackbone,
        head: nn.Sequential,
        classifier: nn.Sequential,
    ):
        super().__init__()
        self.adapter, self.backbone = adapter, backbone
        self.head, self.classifier = head, classifier

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Adapter and slice: what may be computed once and cached when the slice is frozen."""
        return self.backbone(self.adapter(images))

    def trained_parts(self) -> dict[str, nn.Module]:
        """The parts whose weights training changes, by name (`head`, `classifier`, and the
        slice's `backbone` body when it trains): what checkpoints and the best epoch keep."""
        parts = {"head": self.head, "classifier": self.classifier}
        if self.backbone.trainable != "none":
            parts["backbone"] = self.backbone.body
        return parts

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images))

    def classify(self, maps: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(maps))


def check_input_size(net: TextVisionNet, pixels: int) -> tuple[int, ...]:
    """Shape of the backbone's maps for one image; a clear error if too small for the head."""
    with torch.no_grad():
        maps = net.features(torch.zeros(1, pixels, pixels))
    kernel_shrink = 4  # each of the head's 4 convs shrinks the maps by one pixel
    if min(maps.shape[-2:]) <= kernel_shrink:
        raise InputError(
            f"images of {pixels}x{pixels} upsampled x{net.adapter.upsample} give "
            f"{tuple(maps.shape[-2:])} maps after the backbone; the head needs more than "
            f"{kernel_shrink}: raise deepinsight.pixels or training.upsample"
        )
    return tuple(maps.shape[1:])


def slice_keys(state_keys, spec: Slice) -> list[str]:
    """The state_dict keys of the full model that belong to the slice (BatchNorm's
    `num_batches_tracked` counters excepted: frozen slices never use them)."""
    keys = [k for k in state_keys if not k.endswith("num_batches_tracked")]
    if spec.stop is not None:
        return [k for k in keys if k.startswith("features.") and int(k.split(".")[1]) < spec.stop]
    return [k for k in keys if k.split(".")[0] in spec.modules]


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights: from the TORCH_HOME cache, else downloaded; a clear
    error naming the file and the download's own error where neither works."""
    enum = torchvision.models.get_model_weights(arch)
    weights = enum.DEFAULT
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    cached = folder / os.path.basename(weights.url)
    # the default release first, then any other ImageNet release torchvision has of `arch`
    for release in dict.fromkeys([weights, *enum]):
        found = folder / os.path.basename(release.url)
        if "IMAGENET1K" in release.name and found.exists():
            return load_state_dict_file(found)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        reason, cause = "HF_HUB_OFFLINE=1, so no download was tried", None
    else:
        try:
            return weights.get_state_dict(progress=False)
        except Exception as err:  # noqa: BLE001 - URLError, timeouts, HTTP errors, ...
            reason, cause = f"download failed: {type(err).__name__}: {err}", err
    raise InputError(
        f"ImageNet weights for {arch} ({weights}) are not in the torch cache ({cached}) and "
        f"{reason}. On a machine with network run `textvision prefetch --config CONFIG` (or "
        f"download {weights.url} to that path) with the same TORCH_HOME, or set "
        "training.weights to 'none' or a local state_dict file."
    ) from cause


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a local file, read with `weights_only=True` (pickled code is refused)."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise InputError(f"{path}: weights file is empty; expected a state_dict of tensors")
    try:
        with warnings.catch_warnings():  # torch's warnings about the pickle protocol
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise InputError(f"{path}: weights file not found") from err
    except pickle.UnpicklingError as err:  # torch's own text: paragraphs with colour codes
        raise InputError(
            f"{path}: not a loadable state_dict (it holds pickled Python objects, which are "
            "never loaded: they could run code); expected tensors saved with "
            "torch.save(model.state_dict(), path)"
        ) from err
    except Exception as err:  # noqa: BLE001 - RuntimeError (not a zip), EOFError, ...
        reason = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines() or [
            type(err).__name__
        ]
        raise InputError(f"{path}: not a loadable state_dict ({reason[0]})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"{path}: expected a state_dict (a mapping of names to tensors), "
            f"got {type(state).__name__}"
        )
    return state


def build_backbone(name: str, weights: str, trainable: str = "none") -> SliceBackbone:
    """The slice of `name` with `weights` ('imagenet', 'none' or a state_dict file), frozen or
    with the blocks `trainable` names training."""
    arch, spec = parse_backbone(name)
    model = torchvision.models.get_model(arch, weights=None)
    if weights != RANDOM_WEIGHTS:
        state = imagenet_state_dict(arch) if weights == IMAGENET else load_state_dict_file(weights)
        own = model.state_dict()
        needed = slice_keys(own, spec)
        missing = [k for k in needed if k not in state]
        if missing:
            raise InputError(
                f"{weights}: lacks {len(missing)} tensor(s) of the {name} slice, e.g. {missing[:3]}"
            )
        wrong = [k for k in needed if state[k].shape != own[k].shape]
        if wrong:
            k = wrong[0]
            raise InputError(
                f"{weights}: tensor {k!r} has shape {tuple(state[k].shape)}, "
                f"expected {tuple(own[k].shape)} for {name}"
            )
        bad = [k for k in needed if not torch.isfinite(state[k]).all()]
        if bad:
            raise InputError(
                f"{weights}: tensor {bad[0]!r} of the {name} slice holds NaN or infinite values"
                f" ({len(bad)} such tensor(s)); expected finite weights"
            )
        model.load_state_dict({k: state[k] for k in needed}, strict=False)
    if spec.stop is not None:
        body = nn.Sequential(*list(model.features.children())[: spec.stop])
    else:
        body = nn.Sequential(*(getattr(model, m) for m in spec.modules))
    return SliceBackbone(body, spec.channels, trainable)


def place(net: TextVisionNet, dev: torch.device) -> TextVisionNet:
    """`net` on `dev`; on a CPU in channels-last layout (oneDNN's convolutions run faster)."""
    net.to(dev)
    if dev.type == "cpu":
        net.to(memory_format=torch.channels_last)
    return net


def check_adaptable(body: nn.Module, backbone: str, weights: str) -> None:
    """Stop, naming the backbone and the weights, where `training.batchnorm: adapt` has nothing
    to re-estimate: a slice without BatchNorm, or a weights file with folded BatchNorm."""
    if not batchnorm_layers(body):
        raise InputError(
            f"training.batchnorm 'adapt': backbone {backbone} (weights {weights}) has no "
            "BatchNorm layer to adapt; use 'frozen' for it"
        )
    if is_weights_file(weights) and has_initial_statistics(body):
        raise InputError(
            f"training.batchnorm 'adapt': backbone {backbone} with weights {weights} has folded "
            "BatchNorm (every running mean 0, variance 1: no running statistics to re-estimate, "
            "and adapting would undo the folding); use 'frozen' or unfolded weights"
        )


def check_backbone(name: str, weights: str, batchnorm: str) -> None:
    """What a training job would refuse about its slice, checked without training: the slice
    built with `weights` (a file: loadable, holding the slice's tensors in their shapes, every
    value finite) and, for `batchnorm` 'adapt', BatchNorm with statistics to re-estimate."""
    backbone = build_backbone(name, weights)
    if batchnorm == "adapt":
        check_adaptable(backbone.body, name, weights)
