"""A hand-written forward pass of post-LayerNorm BERT-style encoders that computes only the
`[CLS]` rows of chosen layers of unpadded texts, with the model's own modules."""

from __future__ import annotations

from functools import partial

import torch

from textvision.embed.int8 import Int8Linear


def bert_like(model) -> bool:
    """Whether `model` is a post-LayerNorm BERT-style encoder whose layers `BertCLSForward` runs
    (BERT, RoBERTa, MiniLM, ...); anything else goes through the model's own forward."""
    try:
        layer = model.encoder.layer[0]
        parts = (
            model.embeddings,
            layer.attention.self.query,
            layer.attention.self.key,
            layer.attention.self.value,
            layer.attention.output,
            layer.intermediate,
            layer.output,
        )
        heads = layer.attention.self.num_attention_heads
        size = layer.attention.self.attention_head_size
    except (AttributeError, IndexError, TypeError):
        return False
    config = model.config
    return (
        all(isinstance(p, torch.nn.Module) for p in parts)
        and heads * size == config.hidden_size
        and not getattr(config, "is_decoder", False)
        and not getattr(config, "add_cross_attention", False)
        and getattr(config, "position_embedding_type", "absolute") in (None, "absolute")
        and getattr(config, "_attn_implementation", "sdpa") in ("sdpa", "eager")
        and getattr(config, "chunk_size_feed_forward", 0) == 0
    )


class BertCLSForward:
    """`[CLS]` rows of the chosen layers (1-based) of unpadded texts, with the model's own
    modules for embeddings, attention output, feed-forward and LayerNorms, and one fused
    Q/K/V product per layer; full layers below the deepest chosen one, in it attention for the
    `[CLS]` query only."""

    def __init__(self, model, layers: list[int]):
        self.model, self.layers = model, list(layers)
        self.deepest = max(layers)
        with torch.no_grad():
            self.projections = [
                self._fuse(layer.attention.self, index)
                for index, layer in enumerate(model.encoder.layer[: self.deepest], start=1)
            ]
        first = model.encoder.layer[0].attention.self
        self.heads, self.size = first.num_attention_heads, first.attention_head_size

    def _fuse(self, attention, index: int) -> tuple:
        """(Q|K|V) below the deepest layer, in it (Q, K|V): `|` one product for several."""
        query, key, value = attention.query, attention.key, attention.value
        if index < self.deepest:
            return (_side_by_side([query, key, value]),)
        return _side_by_side([query]), _side_by_side([key, value])

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.from_embeddings(self.model.embeddings(input_ids=input_ids))

    def from_embeddings(self, hidden: torch.Tensor) -> torch.Tensor:
        """The chosen layers' `[CLS]` rows from the embedding layer's output `[B, T, H]`."""
        rows = {}
        for index, layer in enumerate(self.model.encoder.layer[: self.deepest], start=1):
            projections = self.projections[index - 1]
            if index < self.deepest:
                hidden = self._layer(layer, *projections, hidden)
                rows[index] = hidden[:, 0]
            else:
                rows[index] = self._cls_layer(layer, *projections, hidden)[:, 0]
        return torch.stack([rows[i] for i in self.layers], dim=1)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, H]` -> `[B, heads, T, head size]` (a view)."""
        return x.unflatten(-1, (self.heads, self.size)).transpose(1, 2)

    def _attend(self, layer, query, key, value, residual):
        context = torch.nn.functional.scaled_dot_product_attention(
            self._split(query), self._split(key), self._split(value), scale=self.size**-0.5
        )
        context = context.transpose(1, 2).flatten(2)
        attended = layer.attention.output(context, residual)
        return layer.output(layer.intermediate(attended), attended)

    def _layer(self, layer, qkv, hidden):
        query, key, value = qkv(hidden).chunk(3, dim=-1)
        return self._attend(layer, query, key, value, hidden)

    def _cls_layer(self, layer, q, kv, hidden):
        """The layer's output for the first token only: `[B, 1, H]`."""
        first = hidden[:, :1]
        key, value = kv(hidden).chunk(2, dim=-1)
        return self._attend(layer, q(first), key, value, first)


def _side_by_side(linears: list):
    """One callable whose output is those of `linears` concatenated (one matrix product)."""
    if all(isinstance(linear, Int8Linear) for linear in linears):
        return Int8Linear.concat(linears)
    weight = torch.cat([linear.weight for linear in linears])
    bias = torch.cat([linear.bias for linear in linears])
    return partial(torch.nn.functional.linear, weight=weight, bias=bias)
