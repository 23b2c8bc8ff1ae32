"""Encoder linear layers in int8 on a CPU: weights quantised once per output channel,
activations per row at each call (dynamic quantisation), products summed exactly in int32;
each sequence's first position (the `[CLS]` token) stays in float32."""

from __future__ import annotations

import copy

import torch

LEVELS = 127  # symmetric int8: -127..127


def _symmetric(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` [R, C] -> (int8 values, float32 scale per row [R, 1]) with `x ~ values * scale`."""
    scale = x.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12).div_(LEVELS)
    return torch.round(x / scale).to(torch.int8), scale


class Int8Linear(torch.nn.Module):
    """`y = x W^T + b` with W and each row of x rounded to 127 levels of their largest magnitude
    (one scale per output channel, one per row), `torch._int_mm` for the product. On inputs
    `[..., T, in]` position 0 of each sequence is computed in float32: `[CLS]` vectors differ
    little from text to text, less than int8's rounding of them (measured on MiniLM: the
    rounding error of a layer's `[CLS]` vector up to 13x its spread over texts, 0.002-0.006x
    with that row in float32), while the other tokens' rounding averages out in attention."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        values, scale = _symmetric(weight)
        self.register_buffer("weight", weight)  # [out, in] float32: the first positions
        self.register_buffer("bias", bias)
        self.register_buffer("values", values)  # [out, in] int8
        self.register_buffer("scale", scale.reshape(1, -1))  # [1, out] float32
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    @classmethod
    def from_float(cls, linear: torch.nn.Linear) -> Int8Linear:
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        return cls(linear.weight.detach().float().clone(), bias)

    @classmethod
    def concat(cls, linears: list[Int8Linear]) -> Int8Linear:
        """One layer whose outputs are those of `linears` side by side (the same numbers: the
        scales are per output channel)."""
        biases = [linear.bias for linear in linears]
        return cls(
            torch.cat([linear.weight for linear in linears]),
            None if any(b is None for b in biases) else torch.cat(biases),
        )

    def to_float(self) -> torch.nn.Linear:
        """The float32 layer this one was made from."""
        linear = torch.nn.utils.skip_init(
            torch.nn.Linear, self.in_features, self.out_features, bias=self.bias is not None
        )
        linear.weight.data.copy_(self.weight)
        if self.bias is not None:
            linear.bias.data.copy_(self.bias)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        values, row_scale = _symmetric(rows)
        out = torch._int_mm(values, self.values.t()).float().mul_(self.scale)
        out = out.mul_(row_scale) if self.bias is None else torch.addcmul(self.bias, out, row_scale)
        out = out.reshape(*x.shape[:-1], self.out_features)
        if x.dim() >= 3:
            first = torch.nn.functional.linear(x.select(-2, 0), self.weight, self.bias)
            out.select(-2, 0).copy_(first)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _swap(module: torch.nn.Module, kind: type, make) -> torch.nn.Module:
    for name, child in module.named_children():
        if type(child) is kind:
            setattr(module, name, make(child))
        else:
            _swap(child, kind, make)
    return module


def quantize_linears(module: torch.nn.Module) -> torch.nn.Module:
    """`module` with every `torch.nn.Linear` in it replaced by an `Int8Linear`, in place."""
    return _swap(module, torch.nn.Linear, Int8Linear.from_float)


def float_linears(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` with every `Int8Linear` back to the float32 `torch.nn.Linear` it was
    made from (for gradients, which int8 products have none of)."""
    return _swap(copy.deepcopy(module), Int8Linear, Int8Linear.to_float)
