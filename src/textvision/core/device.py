"""Where tensors live: the `device` config value resolved against what this machine has."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from textvision.core.errors import ConfigError, InputError


def resolve_device(device: str) -> torch.device:
    """`auto` -> CUDA when a GPU is visible, else CPU; `cuda` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' asked (config key 'device'), but no CUDA GPU is visible")
    return torch.device(device)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512-BF16 or AMX tiles)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes
        return False


def training_precision(precision: str, device: torch.device) -> str:
    """`training.precision` resolved on `device`: `auto` is bfloat16 on CUDA and float32 on a
    CPU; `bfloat16` on a CPU needs native bfloat16 (refused where it would be emulated)."""
    if precision == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    if precision == "bfloat16" and device.type == "cpu":
        require_native_bf16("training.precision", "auto or float32")
    return precision


def require_native_bf16(key: str, expected: str) -> None:
    """Refuse bfloat16 (config key `key`) on a CPU that would emulate it slowly."""
    if not native_bf16():
        raise ConfigError(
            f"config key {key!r}: bfloat16 on this CPU, which lacks native bfloat16 "
            f"(AVX-512-BF16 or AMX) and would emulate it slowly; expected {expected}"
        )


@contextmanager
def encoder_kernels(precision: str):
    """The context an encoder runs in: in float32 without oneDNN, whose one op in it on a CPU,
    GELU, compiles and keeps a kernel per tensor shape (up to 1,024), and a batch of a new text
    length is a new shape, so memory grew with the number of texts (ATen's GELU is as fast);
    in bfloat16 and int8 with oneDNN, for its AMX and VNNI matrix products (`torch._int_mm`
    without it is a plain loop, ~100x slower)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = precision != "float32"
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision (bfloat16: on; float32: off)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
