"""Frozen early slices of ImageNet CNNs (torchvision), by registry name.

A name is an architecture, optionally with a cut for the ResNets: `resnet18@layer2`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from textvision.errors import InputError


@dataclass(frozen=True)
class Slice:
    """Which leading part of a torchvision model to keep, and its number of output maps."""

    modules: tuple[str, ...]  # top-level children kept in order, or ("features",) with `stop`
    channels: int
    stop: int | None = None  # for `features[:stop]`


_RESNET_STEM = ("conv1", "bn1", "relu", "maxpool")
_CUTS = {
    "resnet18": {"layer1": 64, "layer2": 128, "layer3": 256},
    "resnet50": {"layer1": 256, "layer2": 512, "layer3": 1024},
}
_LAYERS = ("layer1", "layer2", "layer3")

REGISTRY: dict[str, Slice] = {
    "alexnet": Slice(("features",), 192, stop=5),
    "wide_resnet50_2": Slice((*_RESNET_STEM, "layer1"), 256),
    "resnext50_32x4d": Slice((*_RESNET_STEM, "layer1"), 256),
    "shufflenet_v2_x1_0": Slice(("conv1", "maxpool", "stage2"), 116),
    "vgg16": Slice(("features",), 256, stop=12),
}
for _arch, _maps in _CUTS.items():
    for _layer, _channels in _maps.items():
        cut = _LAYERS[: _LAYERS.index(_layer) + 1]
        REGISTRY[f"{_arch}@{_layer}"] = Slice((*_RESNET_STEM, *cut), _channels)


def parse_backbone(name: str) -> tuple[str, Slice]:
    """(architecture, slice) of a registry name; `resnet18` means `resnet18@layer1`."""
    key = f"{name}@layer1" if name in _CUTS else name
    if key not in REGISTRY:
        raise InputError(f"unknown backbone {name!r}; expected one of {sorted(REGISTRY)}")
    return key.split("@")[0], REGISTRY[key]


def slice_keys(state_keys, spec: Slice) -> list[str]:
    """The state_dict keys of the full model that belong to the slice (BatchNorm's
    `num_batches_tracked` counters excepted: frozen slices never use them)."""
    keys = [k for k in state_keys if not k.endswith("num_batches_tracked")]
    if spec.stop is not None:
        return [k for k in keys if k.startswith("features.") and int(k.split(".")[1]) < spec.stop]
    return [k for k in keys if k.split(".")[0] in spec.modules]


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights: from the TORCH_HOME cache, else downloaded; a clear
    error naming the file where neither works."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.exists() and os.environ.get("HF_HUB_OFFLINE") != "1":
        try:
            return weights.get_state_dict(progress=False)
        except Exception:  # noqa: BLE001 - URLError, timeouts, ...: explained below
            pass
    if not cached.exists():
        raise InputError(
            f"ImageNet weights for {arch} ({weights}) are not in the torch cache: expected "
            f"{cached}. On a machine with network run `textvision prefetch --backbone {arch}` "
            f"(or download {weights.url} to that path) with the same TORCH_HOME, or set "
            "training.weights to 'none' or a local state_dict file."
        )
    return torch.load(cached, map_location="cpu", weights_only=True)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a local file, read with `weights_only=True` (pickled code is refused)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: weights file not found") from None
    except Exception as err:  # noqa: BLE001 - UnpicklingError, RuntimeError (not a zip), ...
        raise InputError(
            f"{path}: not a loadable state_dict (read with weights_only=True, which refuses "
            f"pickled objects): {str(err).splitlines()[0]}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"{path}: expected a state_dict (a mapping of names to tensors), "
            f"got {type(state).__name__}"
        )
    return state


class FrozenBackbone(nn.Module):
    """A sliced backbone that never trains: no gradients, and always in eval mode (BatchNorm
    statistics never move, which folded-BatchNorm weight files require)."""

    def __init__(self, body: nn.Sequential, channels: int):
        super().__init__()
        self.body = body
        self.channels = channels
        self.body.requires_grad_(False)
        self.body.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.body.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.body(x)


def build_backbone(name: str, weights: str = "none") -> FrozenBackbone:
    """The frozen slice of `name` with `weights`: 'imagenet', 'none' or a state_dict file."""
    arch, spec = parse_backbone(name)
    model = torchvision.models.get_model(arch, weights=None)
    if weights != "none":
        state = (
            imagenet_state_dict(arch) if weights == "imagenet" else load_state_dict_file(weights)
        )
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
        model.load_state_dict({k: state[k] for k in needed}, strict=False)
    if spec.stop is not None:
        body = nn.Sequential(*list(model.features.children())[: spec.stop])
    else:
        body = nn.Sequential(*(getattr(model, m) for m in spec.modules))
    return FrozenBackbone(body, spec.channels)
