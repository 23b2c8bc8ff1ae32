import re
from pathlib import Path

from textvision.core.backbones import backbone_names
from textvision.config.schema import load_schema, prepare_config, weights_for
from textvision.core.lock import acquire_outdir, release_outdir
from textvision.config.settings import (
    BaselineSettings,
    DataSettings,
    DomainSettings,
    EmbedSettings,
    MappingSettings,
    MergeSettings,
    PrefetchSettings,
    ReportSettings,
    TrainSettings,
    step_params,
)
from textvision.config.variants import check_comparisons, shares_images, variant_config

# Validate at start-up (types coerced first: `--config` values arrive as strings), defaults filled.
_validated = prepare_config(config, load_schema())
config.clear()
config.update(_validated)

OUT = config["outdir"].rstrip("/")
GPU = 1 if config["device"] == "cuda" else 0
N_SHARDS = config["embedding"]["shards"]
BACKBONES = config["training"]["backbones"]
SEEDS = config["training"]["seeds"]
VARIANTS = {name: variant_config(config, name) for name in config["variants"]}
check_comparisons(config)  # rows the run makes; a step's settings alone cannot tell


wildcard_constraints:
    shard=r"\d+",
    seed=r"\d+",
    backbone="|".join(re.escape(name) for name in backbone_names()),
    model="|".join(re.escape(name) for name in [*backbone_names(), "logreg"]),
    variant="|".join(re.escape(name) for name in VARIANTS) or "(?!)",


localrules:
    prepare_data,
    merge_embeddings,
    plot_mapping,
    report,
    prefetch,
    predict,


def res(family):
    """Cluster resources (mem_mb, runtime in minutes) of a rule family, from config."""
    return config["resources"][family]


def source_input(wildcards):
    """The source file or folder, so that a changed input file reruns the data step."""
    source = config["data"]["source"]
    return [] if source == "synthetic" or source.startswith("hf:") else [source]


def shard_files():
    return expand(
        f"{OUT}/embeddings/shards/shard{{shard}}-of{N_SHARDS}.h5", shard=range(N_SHARDS)
    )


def weights_input(wildcards):
    weights = weights_for(config, wildcards.backbone)
    return [] if weights in ("imagenet", "none") else [weights]


def train_params(wildcards):
    """The training settings resolved for this job's backbone (its weights and learning rates
    only: another backbone's change leaves this job alone)."""
    return step_params(TrainSettings, config, backbone=wildcards.backbone)


def variant_deepinsight(wildcards):
    """The mapping and images a variant trains on: the main run's when it keeps its DeepInsight
    settings, else its own."""
    name = wildcards.variant
    root = OUT if shares_images(config, name) else f"{OUT}/variants/{name}"
    return {
        "mapping": f"{root}/deepinsight/mapping.h5",
        "images": f"{root}/images/images.h5",
    }


def variant_weights_input(wildcards):
    weights = weights_for(VARIANTS[wildcards.variant], wildcards.backbone)
    return [] if weights in ("imagenet", "none") else [weights]


def variant_train_params(wildcards):
    return step_params(
        TrainSettings, VARIANTS[wildcards.variant], backbone=wildcards.backbone
    )


def variant_train_files(name="metrics.json"):
    """A file of every variant training job."""
    return [
        f"{OUT}/variants/{variant}/train/{backbone}/seed{seed}/{name}"
        for variant, vconfig in VARIANTS.items()
        for backbone in vconfig["training"]["backbones"]
        for seed in vconfig["training"]["seeds"]
    ]


def reference_input(wildcards):
    """The folder of natural images, if one is configured (`sklearn`: none)."""
    reference = config["domain"]["reference"]
    return [] if reference == "sklearn" else [reference]


def domain_params(wildcards):
    """The domain-shift settings resolved for this job's backbone (its weights; no learning
    rates: a learning-rate change leaves these jobs alone)."""
    return step_params(DomainSettings, config, backbone=wildcards.backbone)


def domain_files():
    return expand(f"{OUT}/domain/{{backbone}}.json", backbone=BACKBONES)


BUNDLE_FILES = ["bundle.json", "tensors.safetensors"]


def bundle_files():
    """Each training job's and the baseline's model bundle and validation probabilities."""
    files = expand(
        f"{OUT}/train/{{backbone}}/seed{{seed}}/{{name}}",
        backbone=BACKBONES,
        seed=SEEDS,
        name=[*(f"bundle/{f}" for f in BUNDLE_FILES), "predictions.parquet"],
    )
    if config["baseline"]["enabled"]:
        files += [f"{OUT}/baselines/logreg/bundle/{f}" for f in BUNDLE_FILES]
        files.append(f"{OUT}/baselines/logreg/predictions.parquet")
    return files


def predict_models():
    """The models of `predict.models` (empty: every backbone, and `logreg` when the baseline
    is enabled), each checked."""
    models = config["predict"]["models"] or [
        *BACKBONES,
        *(["logreg"] if config["baseline"]["enabled"] else []),
    ]
    allowed = [*BACKBONES, *(["logreg"] if config["baseline"]["enabled"] else [])]
    unknown = [m for m in models if m not in allowed]
    if unknown:
        raise ValueError(
            f"config key 'predict.models': {unknown} not trained here; expected some of {allowed}"
        )
    return models


def predict_files():
    return expand(f"{OUT}/predict/{{model}}/predictions.csv", model=predict_models())


def predict_targets(wildcards):
    """The predictions of `snakemake predict`; `predict.source` must be set."""
    if not config["predict"]["source"]:
        raise ValueError(
            "config key 'predict.source' is null: set the texts to classify, e.g. "
            '--config \'predict={"source": "reviews.csv"}\''
        )
    return predict_files()


def model_bundle(wildcards):
    """The bundle folder's files of a `predict/{model}` job: the baseline, or the backbone's
    first seed."""
    model = wildcards.model
    if model == "logreg":
        folder = f"{OUT}/baselines/logreg/bundle"
    else:
        folder = f"{OUT}/train/{model}/seed{SEEDS[0]}/bundle"
    return [f"{folder}/{name}" for name in BUNDLE_FILES]


def metrics_files():
    files = expand(
        f"{OUT}/train/{{backbone}}/seed{{seed}}/metrics.json",
        backbone=BACKBONES,
        seed=SEEDS,
    )
    if config["baseline"]["enabled"]:
        files.append(f"{OUT}/baselines/logreg/metrics.json")
    return files + variant_train_files()


def predictions_files():
    """The per-example predictions beside every metrics file (what comparisons pair up)."""
    return [str(Path(f).with_name("predictions.parquet")) for f in metrics_files()]


DEEPINSIGHT_FIGURES = ["feature_density", "class_means", "samples", "feature_map"]
REPORT_FIGURES = ["accuracy", "learning_curves", "confusion", "comparisons", "costs"]
# the names textvision.domain.figures.DOMAIN_FIGURES writes (tests/test_domain.py checks)
DOMAIN_FIGURES = ["inputs", "normalisation", "histograms", "frechet"]


def benchmark_files():
    """The benchmark file of every job the report summarises (all of `all` but the report)."""
    files = [
        f"{OUT}/benchmarks/{rule}/{rule}.tsv"
        for rule in ["prepare_data", "merge_embeddings", "fit_mapping", "render_images"]
        + ["plot_mapping"]
        + (["baseline_logreg"] if config["baseline"]["enabled"] else [])
    ]
    files += expand(
        f"{OUT}/benchmarks/embed_shard/shard{{shard}}-of{N_SHARDS}.tsv",
        shard=range(N_SHARDS),
    )
    files += expand(
        f"{OUT}/benchmarks/domain_shift/{{backbone}}.tsv", backbone=BACKBONES
    )
    files += expand(
        f"{OUT}/benchmarks/train/{{backbone}}/seed{{seed}}.tsv",
        backbone=BACKBONES,
        seed=SEEDS,
    )
    for variant, vconfig in VARIANTS.items():
        if not shares_images(config, variant):
            files += [
                f"{OUT}/benchmarks/{rule}/{variant}.tsv"
                for rule in ("fit_mapping_variant", "render_images_variant")
            ]
        files += expand(
            f"{OUT}/benchmarks/train_variant/{variant}/{{backbone}}/seed{{seed}}.tsv",
            backbone=vconfig["training"]["backbones"],
            seed=vconfig["training"]["seeds"],
        )
    files += [
        (
            f"{OUT}/benchmarks/explain_logreg/logreg.tsv"
            if model == "logreg"
            else f"{OUT}/benchmarks/explain_backbone/{model}.tsv"
        )
        for model in (explain_models() if config["explain"]["enabled"] else [])
    ]
    return files


def product_files():
    """Every product of the design: embeddings, mapping, images, each backbone's trained model
    and metrics, the model bundles, the baseline's metrics. Targets of `all`, so a deleted one is rebuilt.
    """
    return [
        f"{OUT}/embeddings/embeddings.h5",
        f"{OUT}/deepinsight/mapping.h5",
        f"{OUT}/images/images.h5",
        *expand(
            f"{OUT}/train/{{backbone}}/seed{{seed}}/{{name}}",
            backbone=BACKBONES,
            seed=SEEDS,
            name=["model.pt", "history.csv"],
        ),
        *metrics_files(),
        *predictions_files(),
        *bundle_files(),
        *domain_files(),
    ]


def get_final_output():
    return [
        *product_files(),
        f"{OUT}/report/results.csv",
        f"{OUT}/report/results.md",
        f"{OUT}/report/comparisons.csv",
        *expand(f"{OUT}/report/{{fig}}.png", fig=REPORT_FIGURES),
        *expand(f"{OUT}/deepinsight/{{fig}}.png", fig=DEEPINSIGHT_FIGURES),
        *expand(
            f"{OUT}/domain/{{backbone}}_{{fig}}.png",
            backbone=BACKBONES,
            fig=DOMAIN_FIGURES,
        ),
        f"{OUT}/report/domain_shift.png",
        *(predict_files() if config["predict"]["source"] else []),
        *explain_reported(),
    ]


onstart:
    acquire_outdir(OUT)


onsuccess:
    release_outdir(OUT)


onerror:
    release_outdir(OUT)


# the names textvision.explain.figures writes beside features.csv (tests/test_explain.py checks)
EXPLAIN_FIGURES = ["attribution_map", "layer_attribution"]


def explain_models():
    """The models of `explain.models` (empty: every backbone, and `logreg` when the baseline
    is enabled), each checked."""
    allowed = [*BACKBONES, *(["logreg"] if config["baseline"]["enabled"] else [])]
    models = config["explain"]["models"] or allowed
    unknown = [m for m in models if m not in allowed]
    if unknown:
        raise ValueError(
            f"config key 'explain.models': {unknown} not trained here; expected some of {allowed}"
        )
    return models


def explain_targets(wildcards):
    """The index page of every model `snakemake explain` explains."""
    return [f"{OUT}/explain/{model}/index.html" for model in explain_models()]


def explain_reported():
    """The explain pages the report links: every `explain_targets` page with `explain.enabled`."""
    return explain_targets(None) if config["explain"]["enabled"] else []


def backbone_bundle(wildcards):
    """The bundle files of a backbone's first seed (what `explain` explains)."""
    backbone = wildcards.backbone
    folder = f"{OUT}/train/{backbone}/seed{SEEDS[0]}/bundle"
    return [f"{folder}/{name}" for name in BUNDLE_FILES]
