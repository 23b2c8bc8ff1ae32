"""Where tensors live: the `device` config value resolved against what this machine has."""

from __future__ import annotations

import torch

from textvision.errors import InputError


def resolve_device(device: str) -> torch.device:
    """`auto` -> CUDA when a GPU is visible, else CPU; `cuda` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' asked (config key 'device'), but no CUDA GPU is visible")
    return torch.device(device)
