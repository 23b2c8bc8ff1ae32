"""The network of the paper: frozen backbone slice -> conv head ("CAE") -> dense classifier."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from textvision.backbones import FrozenBackbone
from textvision.errors import InputError


class InputAdapter(nn.Module):
    """1-channel image -> Z-normalised -> 3 channels -> nearest upsampling by `upsample`.

    `mu`/`sigma` are the training pixels' statistics: scalars (the paper's) or `[P, P]` maps
    (per-pixel, which removes the texture every DeepInsight image shares); `per_batch` uses the
    batch's own scalar statistics instead, as the original code did.
    """

    def __init__(self, mu, sigma, eps: float = 1e-8, upsample: int = 3, per_batch: bool = False):
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
    """adapter -> frozen backbone -> head -> classifier; only head and classifier train."""

    def __init__(
        self,
        adapter: InputAdapter,
        backbone: FrozenBackbone,
        head: nn.Sequential,
        classifier: nn.Sequential,
    ):
        super().__init__()
        self.adapter, self.backbone = adapter, backbone
        self.head, self.classifier = head, classifier

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen part: what may be computed once and cached."""
        return self.backbone(self.adapter(images))

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
