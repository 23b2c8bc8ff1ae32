"""The registry of frozen early slices of ImageNet CNNs (torchvision), by name.

A name is an architecture, optionally with a cut for the ResNets: `resnet18@layer2`. The registry
is the one list of backbones: the config check, the workflow's wildcard, the learning-rate
defaults and the benchmarks derive from it. Plain data, no torch: `textvision.models.network`
builds the slices.
"""

from __future__ import annotations

from dataclasses import dataclass

from textvision.core.errors import InputError
from textvision.core.paper import LEARNING_RATES


@dataclass(frozen=True)
class Slice:
    """Which leading part of a torchvision model to keep, its number of output maps, and the
    default Adam learning rates of the head and classifier trained on it."""

    modules: tuple[str, ...]  # top-level children kept in order, or ("features",) with `stop`
    channels: int
    lr_head: float
    lr_classifier: float
    stop: int | None = None  # for `features[:stop]`
    paper: bool = False  # one of the paper's five


REGISTRY: dict[str, Slice] = {}
ALIASES: dict[str, str] = {}  # `resnet18` -> `resnet18@layer1`


def register_backbone(
    name: str, modules: tuple[str, ...], channels: int, *, stop=None, paper=False
) -> None:
    """Add `name` to the registry with its architecture's learning rates; refuse duplicates."""
    if name in REGISTRY:
        raise ValueError(f"backbone {name!r} is registered already")
    lr = LEARNING_RATES[name.split("@")[0]]
    REGISTRY[name] = Slice(modules, channels, lr["head"], lr["classifier"], stop, paper)


_RESNET_STEM = ("conv1", "bn1", "relu", "maxpool")
register_backbone("alexnet", ("features",), 192, stop=5, paper=True)
register_backbone("wide_resnet50_2", (*_RESNET_STEM, "layer1"), 256, paper=True)
register_backbone("resnext50_32x4d", (*_RESNET_STEM, "layer1"), 256, paper=True)
register_backbone("shufflenet_v2_x1_0", ("conv1", "maxpool", "stage2"), 116, paper=True)
register_backbone("vgg16", ("features",), 256, stop=12, paper=True)
# MobileNetV2 to its third stage (`features[:7]`, 32 maps at stride 8, like the AlexNet and
# ShuffleNet slices; 6 of its 17 inverted residual blocks): an ImageNet slice whose BatchNorm
# layers carry real running statistics, for `training.batchnorm: adapt` and the domain shift
register_backbone("mobilenet_v2", ("features",), 32, stop=7)
for _arch, _channels in {"resnet18": (64, 128, 256), "resnet50": (256, 512, 1024)}.items():
    for _depth, _maps in enumerate(_channels, start=1):
        _layers = tuple(f"layer{i}" for i in range(1, _depth + 1))
        register_backbone(f"{_arch}@layer{_depth}", (*_RESNET_STEM, *_layers), _maps)
    ALIASES[_arch] = f"{_arch}@layer1"


def backbone_names() -> list[str]:
    """Every name a config may use: registry names and their aliases."""
    return sorted([*REGISTRY, *ALIASES])


def paper_backbones() -> list[str]:
    """The paper's five, in registry order."""
    return [name for name, spec in REGISTRY.items() if spec.paper]


def backbone_table() -> list[dict]:
    """One row per registry entry: name, feature maps, default learning rates, paper's or not."""
    return [
        {
            "name": name,
            "feature_maps": spec.channels,
            "lr_head": spec.lr_head,
            "lr_classifier": spec.lr_classifier,
            "paper": spec.paper,
        }
        for name, spec in REGISTRY.items()
    ]


def parse_backbone(name: str) -> tuple[str, Slice]:
    """(architecture, slice) of a registry name; `resnet18` means `resnet18@layer1`."""
    key = ALIASES.get(name, name)
    if key not in REGISTRY:
        raise InputError(f"unknown backbone {name!r}; expected one of {backbone_names()}")
    return key.split("@")[0], REGISTRY[key]
