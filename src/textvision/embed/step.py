"""BERT-family encoders -> `[CLS]` vectors of chosen layers, written as HDF5 `[N, L, H]` tensors."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from textvision import __version__
from textvision.config.settings import EmbedSettings, MergeSettings
from textvision.core.device import resolve_device
from textvision.core.errors import ConfigError, InputError
from textvision.core.io import (
    atomic_path,
    attrs_dict,
    check_free_space,
    open_h5,
    set_attrs,
    string_array,
)
from textvision.data.store import read_dataset
from textvision.embed.encoder import (
    attention_of,
    check_max_length,
    check_precision,
    embed_texts,
    layer_indices,
    load_encoder,
    token_limit,
    weights_hash,
)

log = logging.getLogger(__name__)

CHUNK = 2048  # texts tokenised and written at a time: memory stays flat as N grows


def check_shards(n_shards: int, shard: int, n_rows: int, dataset: str | Path) -> None:
    """Every shard needs a row; `shard` must be one of them."""
    if n_shards > n_rows:
        raise ConfigError(
            f"config key 'embedding.shards': {n_shards} shards for {n_rows} rows of {dataset}; "
            f"expected at most {n_rows} (one row per shard at least)"
        )
    if not 0 <= shard < n_shards:
        raise ConfigError(
            f"--shard {shard}: out of range for embedding.shards={n_shards}; expected 0 to "
            f"{n_shards - 1}"
        )


def shard_bounds(n_rows: int, shard: int, n_shards: int) -> tuple[int, int]:
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for {n_shards} shards")
    return n_rows * shard // n_shards, n_rows * (shard + 1) // n_shards


def embed_dataset(
    dataset: str | Path, out: str | Path, settings: EmbedSettings, shard: int = 0
) -> None:
    """Embed the rows of shard `shard` (of `settings.shards`) of `dataset.parquet` into an HDF5
    file (dataset `cls`)."""
    model, layers, n_shards = settings.model, settings.layers, settings.shards
    max_length, precision = settings.max_length, settings.precision
    frame, meta = read_dataset(dataset)
    check_shards(n_shards, shard, len(frame), dataset)  # before the encoder is loaded
    device = str(resolve_device(settings.device))
    check_precision(precision, device)
    start, stop = shard_bounds(len(frame), shard, n_shards)
    texts = frame["text"].tolist()[start:stop]
    tokenizer, encoder, folder = load_encoder(model, device, precision)
    check_max_length(max_length, token_limit(tokenizer, encoder), model)
    index = layer_indices(layers, encoder.config.num_hidden_layers)
    hidden = encoder.config.hidden_size
    check_free_space(out, 4 * len(texts) * len(index) * hidden + (1 << 20))
    attrs = {
        "model": model,
        "model_path": str(folder),
        "weights_sha256": weights_hash(folder),
        "layers": index,
        "max_length": max_length,
        "clean_html": meta["clean_html"],
        "dtype": "float32",
        "precision": precision,
        "attention": attention_of(encoder),
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
                max_length=max_length,
                batch_size=settings.batch_size,
                precision=precision,
                progress=bar,
            )
        set_attrs(fh, attrs)
    log.info("wrote %s: rows %d..%d of %d", out, start, stop, len(frame))


def merge_shards(
    shards: list[str | Path], dataset: str | Path, out: str | Path, settings: MergeSettings
) -> None:
    """Concatenate shard files in order into one `embeddings.h5`; id/label/split beside `cls`
    (`settings.compression`: `none`, `lzf` or `gzip`, applied to the chunked `cls`)."""
    compression = settings.compression
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
        if compression == "none":
            check_free_space(out, 4 * int(np.prod(shape)) + (1 << 20))
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
