import re
from pathlib import Path

from textvision.backbones import backbone_names
from textvision.config import load_schema, prepare_config, weights_for
from textvision.lock import acquire_outdir, release_outdir
from textvision.settings import (
    BaselineSettings,
    DataSettings,
    DomainSettings,
    EmbedSettings,
    MappingSettings,
    MergeSettings,
    PrefetchSettings,
    TrainSettings,
    step_params,
)

# Validate at start-up (types coerced first: `--config` values arrive as strings), defaults filled.
_validated = prepare_config(
    config, load_schema(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
)
config.clear()
config.update(_validated)

OUT = config["outdir"].rstrip("/")
GPU = 1 if config["device"] == "cuda" else 0
N_SHARDS = config["embedding"]["shards"]
BACKBONES = config["training"]["backbones"]
SEEDS = config["training"]["seeds"]


wildcard_constraints:
    shard=r"\d+",
    seed=r"\d+",
    backbone="|".join(re.escape(name) for name in backbone_names()),
    model="|".join(re.escape(name) for name in [*backbone_names(), "logreg"]),


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
        name=[*(f"bundle/{f}" for f in BUNDLE_FILES), "val_proba_best.npy"],
    )
    if config["baseline"]["enabled"]:
        files += [f"{OUT}/baselines/logreg/bundle/{f}" for f in BUNDLE_FILES]
        files.append(f"{OUT}/baselines/logreg/val_proba_best.npy")
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
    return files


DEEPINSIGHT_FIGURES = ["feature_density", "class_means", "samples", "feature_map"]
REPORT_FIGURES = ["accuracy", "learning_curves", "confusion"]
# the names textvision.domain_figures.DOMAIN_FIGURES writes (tests/test_domain.py checks)
DOMAIN_FIGURES = ["inputs", "normalisation", "histograms", "frechet"]


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
        *bundle_files(),
        *domain_files(),
    ]


def get_final_output():
    return [
        *product_files(),
        f"{OUT}/report/results.csv",
        f"{OUT}/report/results.md",
        *expand(f"{OUT}/report/{{fig}}.png", fig=REPORT_FIGURES),
        *expand(f"{OUT}/deepinsight/{{fig}}.png", fig=DEEPINSIGHT_FIGURES),
        *expand(
            f"{OUT}/domain/{{backbone}}_{{fig}}.png",
            backbone=BACKBONES,
            fig=DOMAIN_FIGURES,
        ),
        f"{OUT}/report/domain_shift.png",
        *(predict_files() if config["predict"]["source"] else []),
    ]


onstart:
    acquire_outdir(OUT)


onsuccess:
    release_outdir(OUT)


onerror:
    release_outdir(OUT)
