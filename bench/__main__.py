"""`python -m bench`: run the benchmark table and print it as Markdown (see bench/README.md)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from bench import (
    deepinsight_fit,
    embedding,
    explain,
    image_methods,
    predict,
    render,
    training,
    workflow,
)
from bench.common import FOREIGN, IMDB, REPO, log, setup_logging
from bench.machine import describe
from bench.machine import markdown as machine_markdown
from textvision.core.markdown import markdown_table

BENCHMARKS = ("embed", "fit", "render", "train", "predict", "explain", "workflow")
# run only when named: their references need installs beyond the test extra (bench/references.py)
EXTRA = ("methods",)
HEADER = ["step", "inputs", "reference", "ours", "ratio", "target", "met", "notes"]
SCALING_HEADER = ["step", "size", "time (median)", "throughput", "peak RSS", "peak above start"]


README = REPO / "bench" / "README.md"
# the README's blocks: the whole default table, and each extra benchmark's own table
BLOCKS = {"results": (), **{name: ("--only", name) for name in EXTRA}}


def readme_block(only: list[str]) -> str | None:
    """The README block that a run of `only` fills, or None for a part of the default table."""
    if sorted(only) == sorted(BENCHMARKS):
        return "results"
    return only[0] if len(only) == 1 and only[0] in EXTRA else None


def markers(block: str) -> tuple[str, str]:
    command = shlex.join(["python", "-m", "bench", *BLOCKS[block], "--readme"])
    return f"<!-- {block}: written by {command} -->", f"<!-- /{block} -->"


def write_readme(path: Path, report: str, block: str = "results") -> None:
    """Put `report` between the README's markers of `block`."""
    start_marker, end_marker = markers(block)
    text = path.read_text()
    head, start, rest = text.partition(start_marker)
    _, end, tail = rest.partition(end_marker)
    if not start or not end:
        raise SystemExit(f"{path}: no {start_marker!r} ... {end_marker!r} block to fill")
    path.write_text(f"{head}{start}\n{report}\n{end}{tail}")


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--only",
        nargs="+",
        choices=BENCHMARKS + EXTRA,
        default=list(BENCHMARKS),
        help=f"these benchmarks (default: all but {', '.join(EXTRA)})",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch/BLAS threads")
    p.add_argument("--imdb", type=Path, default=IMDB, help="real IMDB reviews (parquet)")
    p.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="embeddings.h5 for the DeepInsight rows (default: results/imdb's if present, "
        "else made here from --imdb with the package)",
    )
    p.add_argument("--embed-n", type=int, default=200, help="reviews, embedding vs reference")
    p.add_argument("--embed-scale", type=_sizes, default=[200, 1000], help="scaling sizes")
    p.add_argument(
        "--quality-n", type=int, default=10000, help="reviews, opt-in precisions' accuracy guard"
    )
    p.add_argument(
        "--mpnet",
        type=Path,
        default=Path.home() / ".cache" / "textvision" / "models" / "all-mpnet-base-v2",
        help="local all-mpnet-base-v2 folder for the MPNet rows "
        "(../shared/models/get-all-mpnet-base-v2.sh makes it)",
    )
    p.add_argument(
        "--mpnet-quality-n", type=int, default=2000, help="reviews, MPNet precisions' guard"
    )
    p.add_argument("--fit-rows", type=int, default=10000)
    p.add_argument("--tsne-iter", type=int, default=1000)
    p.add_argument("--backend", default="numba", choices=("numba", "sklearn"))
    p.add_argument(
        "--tintolib-python",
        type=Path,
        default=Path(sys.executable),
        help="interpreter of an environment with TINTOlib for the methods rows (default: this "
        "one; bench/README.md makes one with TINTOlib's own pins)",
    )
    p.add_argument("--igtd-steps", type=int, default=1000, help="IGTD's max_step, both sides")
    p.add_argument("--refined-features", type=int, default=256, help="features of the REFINED rows")
    p.add_argument("--render-rows", type=int, default=10000)
    p.add_argument("--render-scale", type=_sizes, default=[2000, 10000])
    p.add_argument("--train-images", type=int, default=256, help="images per epoch")
    p.add_argument("--backbones", nargs="+", default=list(training.BACKBONES))
    p.add_argument("--predict-n", type=int, default=1000, help="reviews, prediction row")
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="model bundle of the prediction rows (default: results/imdb's ResNet-18 if "
        "present, else one trained here)",
    )
    p.add_argument("--e2e-runs", type=int, default=1)
    p.add_argument("--keep-e2e", action="store_true", help="keep the end-to-end working folder")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    p.add_argument(
        "--readme",
        action="store_true",
        help="also write the table into bench/README.md (between its results markers)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes to check the harness (figures meaningless)",
    )
    args = p.parse_args(argv)
    if args.quick and args.readme:
        p.error("--readme takes the full table, not --quick figures")
    if args.readme and readme_block(args.only) is None:
        p.error(f"--readme takes the whole default table or one of --only {' '.join(EXTRA)}")
    if args.quick:
        args.runs = min(args.runs, 2)
        args.embed_n, args.embed_scale, args.quality_n = 6, [6, 12], 300
        args.mpnet_quality_n = 300
        args.fit_rows, args.tsne_iter = 300, 300
        args.igtd_steps, args.refined_features = 60, 64
        args.render_rows, args.render_scale = 500, [200, 500]
        args.train_images = 32
        args.predict_n = 40
        args.backbones = (
            args.backbones[:2] if args.backbones == list(training.BACKBONES) else (args.backbones)
        )
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging(args.out / "bench.log")
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    log.info("start: %s", command)
    tic = time.perf_counter()
    machine = describe(args.threads)
    log.info("machine: %s", machine)
    rows, scaling, sections, raw, met = [], [], [], {}, {}
    mapping, embeddings = None, None
    for name in BENCHMARKS + EXTRA:
        if name not in args.only:
            continue
        start = time.perf_counter()
        log.info("== %s", name)
        if name == "embed":
            result = embedding.run(args)
        elif name == "fit":
            result = deepinsight_fit.run(args)
            mapping, embeddings = result["mapping"], result["embeddings"]
        elif name == "render":
            if mapping is None:
                args_fit = argparse.Namespace(**{**vars(args), "runs": 1})
                fitted = deepinsight_fit.run(args_fit)
                mapping, embeddings = fitted["mapping"], fitted["embeddings"]
            result = render.run(args, mapping, embeddings)
        elif name == "train":
            result = training.run(args)
        elif name == "predict":
            result = predict.run(args)
        elif name == "explain":
            result = explain.run(args)
        elif name == "methods":
            result = image_methods.run(args)
        else:
            result = workflow.run(args)
        rows += result["rows"]
        scaling += result.get("scaling", [])
        sections += result.get("sections", [])
        met.update(result["met"])
        raw[name] = {k: str(v) if isinstance(v, Path) else v for k, v in result["raw"].items()}
        raw[name]["seconds"] = time.perf_counter() - start
        log.info("== %s done in %.0f s", name, time.perf_counter() - start)
    total = time.perf_counter() - tic
    parts = [
        f"## Results ({'quick check, figures meaningless; ' if args.quick else ''}"
        f"median of {args.runs} runs each, {args.threads} threads)\n",
        markdown_table(HEADER, rows),
    ]
    if scaling:
        parts += ["\n### Scaling\n", markdown_table(SCALING_HEADER, scaling)]
    parts += ["\n" + section for section in sections]
    parts += [
        "\n### Machine\n",
        machine_markdown(machine),
        f"\nTargets met: {sum(met.values())} of {len(met)}"
        + (
            f" (missed: {', '.join(k for k, v in met.items() if not v)})"
            if not all(met.values())
            else ""
        )
        + f". Total benchmark time {total / 60:.1f} min. Command: `{command}`."
        + (
            f" Other processes used a median {np.median(FOREIGN):.0%} (max {max(FOREIGN):.0%}) "
            "of the CPUs during the timed subprocess runs."
            if FOREIGN
            else ""
        ),
    ]
    report = "\n".join(parts)
    print(report)
    (args.out / "results.md").write_text(report + "\n")
    if args.readme:
        write_readme(README, report, readme_block(args.only))
    (args.out / "results.json").write_text(
        json.dumps(
            {"command": command, "machine": machine, "met": met, "raw": raw}, indent=1, default=str
        )
    )
    log.info("done in %.1f min: %s", total / 60, met)
    return 0


if __name__ == "__main__":
    sys.exit(main())
