"""Command line: one subcommand per workflow step (`textvision <step> ...`), so every step also
runs without Snakemake. Inputs and outputs are arguments; settings come from the schema-validated
config: `--config FILE` (the workflow's YAML), `--settings JSON` (the fragment a rule passes) and
`--set KEY=VALUE` overrides, applied in that order over the schema's defaults."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import yaml

from textvision.config.schema import prepare_config, schema_node
from textvision.config.settings import (
    BaselineSettings,
    DataSettings,
    DomainSettings,
    EmbedSettings,
    ExplainSettings,
    MappingSettings,
    MergeSettings,
    PredictSettings,
    PrefetchSettings,
    ReportSettings,
    Settings,
    TrainSettings,
    build_settings,
    deep_merge,
    set_key,
)
from textvision.core.errors import ConfigError, TextVisionError
from textvision.core.threads import limit_threads


def _io_prepare(p):
    p.add_argument("--out", required=True, help="dataset.parquet to write")


def _io_embed(p):
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="shard file to write")
    p.add_argument("--shard", type=int, default=0, help="which shard (0-based) of embedding.shards")


def _io_merge(p):
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("shards", nargs="+")


def _io_fit(p):
    p.add_argument("--embeddings", required=True)
    p.add_argument("--out", required=True, help="mapping.h5 to write")


def _io_render(p):
    p.add_argument("--embeddings", required=True)
    p.add_argument("--mapping", required=True)
    p.add_argument("--out", required=True, help="images.h5 to write")


def _io_plot(p):
    p.add_argument("--mapping", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--outdir", required=True)


def _io_train(p):
    p.add_argument("--images", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--backbone", required=True, help="registry name, e.g. alexnet")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--mapping", help="the DeepInsight mapping.h5 of the images: also write bundle/")


def _io_predict(p):
    p.add_argument("--model", required=True, help="a bundle/ folder of a training job or baseline")
    p.add_argument(
        "--input", required=True, dest="source", help="texts: .csv, .tsv, .parquet or .jsonl"
    )
    p.add_argument("--out", required=True, help="predictions.csv to write")


def _io_explain(p):
    p.add_argument("--model", required=True, help="a bundle/ folder of a training job or baseline")
    texts = p.add_mutually_exclusive_group(required=True)
    texts.add_argument(
        "--input", dest="source", help="texts to explain: .csv, .tsv, .parquet or .jsonl"
    )
    texts.add_argument(
        "--dataset", help="a run's dataset.parquet: explain a sample of its validation texts"
    )
    p.add_argument("--out", required=True, help="folder to write: index.html, a page per text")
    p.add_argument("--text-column", default="text", dest="text_column")
    p.add_argument(
        "--id-column", default=None, dest="id_column", help="default (or ''): row numbers"
    )
    p.add_argument(
        "--reference-dataset",
        dest="reference_dataset",
        help="a run's dataset.parquet whose training texts are the baselines (default: --dataset)",
    )


def _io_domain(p):
    p.add_argument("--images", required=True)
    p.add_argument("--backbone", required=True, help="registry name, e.g. resnet18@layer2")
    p.add_argument("--out-json", required=True, dest="out_json", help="JSON to write")
    p.add_argument("--outdir", required=True, help="folder of the figures {backbone}_*.png")


def _io_baseline(p):
    p.add_argument("--embeddings", required=True)
    p.add_argument("--out", required=True, help="metrics.json to write")


def _io_report(p):
    p.add_argument("--dataset", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--mapping", required=True)
    p.add_argument(
        "--domain", nargs="+", default=[], dest="domain_files", metavar="DOMAIN_JSON",
        help="the domain-shift step's JSON files (one per backbone)",
    )  # fmt: skip
    p.add_argument(
        "--benchmarks", nargs="+", default=[], metavar="TSV",
        help="Snakemake benchmark files (benchmarks/<rule>/...tsv): the cost-per-rule section",
    )  # fmt: skip
    p.add_argument(
        "--explain", nargs="*", default=[], metavar="INDEX_HTML",
        help="`textvision explain` folders' index.html files: the explained-predictions section",
    )  # fmt: skip
    p.add_argument(
        "--layouts", nargs="*", default=[], metavar="MAPPING_H5",
        help="the variants' own mapping.h5 files: the image-layouts section beside --mapping's",
    )  # fmt: skip
    p.add_argument("--outdir", required=True)
    p.add_argument("metrics_files", nargs="+", metavar="METRICS_JSON")


def _io_combine(p):
    p.add_argument(
        "--report", nargs="+", required=True, dest="reports", metavar="NAME=DIR",
        help="a setup's name and its report folder (<outdir>/report), in the order wanted",
    )  # fmt: skip
    p.add_argument("--outdir", required=True, help="where results.csv and comparisons.csv go")


def _io_config_docs(p):
    p.add_argument("--out", required=True, help="e.g. config/README.md")


@dataclass(frozen=True)
class Step:
    """A subcommand: the function it calls ('module:function'), its inputs/outputs and its
    settings class (None: the step has no settings). Every step but `train`, whose thread count
    is its setting `training.threads`, takes `--threads`. `flags`: settings (keys as `--set`
    takes them) that also have an option of their own, for commands typed by hand:
    `--n-texts 3` is `--set n_texts=3`."""

    target: str
    help: str
    io: Callable[[argparse.ArgumentParser], None]
    settings: type[Settings] | None = None
    threads_option: bool = True
    flags: tuple[str, ...] = ()


STEPS: dict[str, Step] = {
    "prepare-data": Step(
        "textvision.data.prepare:prepare_dataset", "labelled texts -> dataset.parquet", _io_prepare,
        DataSettings,
    ),
    "embed": Step(
        "textvision.embed.step:embed_dataset", "dataset.parquet -> [CLS] vectors of one shard",
        _io_embed, EmbedSettings,
    ),
    "merge-embeddings": Step(
        "textvision.embed.step:merge_shards", "shard files -> embeddings.h5", _io_merge,
        MergeSettings,
    ),
    "fit-mapping": Step(
        "textvision.deepinsight.fit:fit_mapping", "embeddings.h5 -> DeepInsight mapping.h5",
        _io_fit, MappingSettings,
    ),
    "render-images": Step(
        "textvision.deepinsight.render:render_images", "embeddings.h5 + mapping.h5 -> images.h5",
        _io_render,
    ),
    "plot-mapping": Step(
        "textvision.deepinsight.figures:plot_mapping", "DeepInsight figures (PNG)", _io_plot
    ),
    "train": Step(
        "textvision.train.step:train_backbone", "images.h5 -> one trained backbone and seed",
        _io_train, TrainSettings, threads_option=False,
    ),
    "domain-shift": Step(
        "textvision.domain.step:domain_shift",
        "images.h5 -> how far text images are from natural ones, for one backbone slice",
        _io_domain, DomainSettings,
    ),
    "baseline": Step(
        "textvision.train.baseline:train_logreg", "logistic regression on the raw embeddings",
        _io_baseline, BaselineSettings,
    ),
    "predict": Step(
        "textvision.predict.step:predict_texts",
        "classify new texts with a model bundle -> predictions.csv", _io_predict,
        PredictSettings, flags=("text_column", "id_column", "batch_size", "device"),
    ),
    "explain": Step(
        "textvision.explain.step:explain_texts",
        "word, pixel and feature attributions of a model bundle's predictions -> HTML pages",
        _io_explain, ExplainSettings, flags=("steps", "n_texts", "seed", "references", "device"),
    ),
    "report": Step(
        "textvision.report.step:build_report",
        "metrics.json files (predictions.parquet beside each) -> results, comparisons, figures",
        _io_report, ReportSettings,
    ),
    "combine-reports": Step(
        "textvision.report.setups:combine_reports",
        "several runs' report folders -> one results.csv and comparisons.csv with a setup column",
        _io_combine,
    ),
    "prefetch": Step(
        "textvision.prefetch.step:prefetch",
        "fill the Hugging Face and torch caches for a config (a cluster's login node)",
        lambda p: None, PrefetchSettings,
    ),
    "config-docs": Step(
        "textvision.config.docs:write_config_readme",
        "write config/README.md from the schema",
        _io_config_docs,
    ),
}  # fmt: skip


def _settings_help(cls: type[Settings]) -> str:
    lines = ["settings (schema defaults; change with --config, --settings or --set):"]
    for key in cls.setting_keys():
        node = schema_node(key)
        default = json.dumps(node["default"]) if "default" in node else "-"
        text = " ".join(str(node.get("description", "")).split())
        short = key.removeprefix(f"{cls.SECTION}.") if cls.SECTION else key
        lines.append(f"  {short} = {default}\n      {text}")
    return "\n".join(lines)


def _add_settings_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="workflow YAML")
    p.add_argument("--settings", metavar="JSON", help="a config fragment (what a rule passes)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="assignments",
        help="override one setting; keys relative to the step's section, e.g. tsne.perplexity=10",
    )  # fmt: skip


def _setting_key(cls: type[Settings], key: str) -> str:
    """The dotted config key of a setting as `--set` takes it (`steps` -> `explain.steps`)."""
    return key if key in cls.TOP_LEVEL or not cls.SECTION else f"{cls.SECTION}.{key}"


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _add_setting_flags(p: argparse.ArgumentParser, step: Step) -> None:
    """An option per `step.flags`, typed from the schema; no default (the settings have it)."""
    for key in step.flags:
        node = schema_node(_setting_key(step.settings, key))
        kind = {"integer": int, "number": float}.get(str(node["type"]), str)  # a list: str
        p.add_argument(
            _flag(key), dest=key, type=kind, choices=node.get("enum"),
            metavar=None if "enum" in node else key.upper(),
            help=f"the setting {key} (the same as --set {key}=...)",
        )  # fmt: skip


def _flag_setting(step: Step, key: str, value) -> dict:
    """`--KEY VALUE` as a config fragment, checked on its own so that an error names it."""
    nested = value
    for part in reversed(_setting_key(step.settings, key).split(".")):
        nested = {part: nested}
    try:
        prepare_config(nested)
    except ConfigError as err:
        raise ConfigError(f"{_flag(key)} {value}: {err}") from err
    return nested


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textvision", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks (or TEXTVISION_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, step in STEPS.items():
        p = sub.add_parser(
            name,
            help=step.help,
            description=step.help,
            epilog=_settings_help(step.settings) if step.settings else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        step.io(p)
        if step.settings:
            _add_settings_options(p)
            _add_setting_flags(p, step)
        if step.threads_option:
            p.add_argument("--threads", type=int, help="threads of torch, BLAS and numba (all)")
    return parser


def _read_yaml(path: str) -> dict:
    try:
        with open(path) as fh:
            loaded = yaml.safe_load(fh)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({problem}{where})") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def resolve_settings(step: Step, args: dict) -> Settings:
    """Schema defaults <- each --config file <- --settings <- the step's own setting options
    (`--steps 8`) <- each --set, validated."""
    config: dict = {}
    for path in args.pop("config"):
        config = deep_merge(config, _read_yaml(path))
    fragment = args.pop("settings")
    if fragment:
        try:
            config = deep_merge(config, json.loads(fragment))
        except json.JSONDecodeError as err:
            raise ConfigError(f"--settings: not valid JSON ({err})") from err
    for key in step.flags:
        if (value := args.pop(key)) is not None:
            config = deep_merge(config, _flag_setting(step, key, value))
    for assignment in args.pop("assignments"):
        config = set_key(config, step.settings, assignment)
    context = {"backbone": args["backbone"]} if "backbone" in args else {}
    return build_settings(step.settings, config, **context)


def run_step(step: Step, args: dict):
    """Call the step's function with its inputs/outputs and settings, under the thread limit."""
    if step.settings:
        args["settings"] = resolve_settings(step, args)
    threads = args.pop("threads", None)
    with limit_threads(threads):
        module, function = step.target.split(":")
        target = getattr(importlib.import_module(module), function)
        if threads is not None and "threads" in inspect.signature(target).parameters:
            args["threads"] = threads
        return target(**args)


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    debug = args.pop("debug") or os.environ.get("TEXTVISION_DEBUG") == "1"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run_step(STEPS[command], args)
    except (TextVisionError, OSError) as err:
        if debug:
            traceback.print_exc()
        print(f"textvision {command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    return 0


def _one_line(err: Exception) -> str:
    """The message; for an operating-system error the path and what the system said."""
    if isinstance(err, TextVisionError) or not isinstance(err, OSError):
        return str(err)
    where = f"{err.filename}: " if err.filename else ""
    return where + (err.strerror or str(err).splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
