import re

from textvision.config.schema import check_outdir, load_schema, prepare_config
from textvision.config.variants import BASELINE, check_comparisons, variant_config
from textvision.core.backbones import backbone_names
from textvision.core.lock import acquire_outdir, release_outdir

# Validate at start-up (types coerced first: `--config` values arrive as strings), defaults filled.
_validated = prepare_config(config, load_schema())
config.clear()
config.update(_validated)

check_outdir(config["outdir"])
OUT = config["outdir"].rstrip("/")
GPU = 1 if config["device"] == "cuda" else 0
N_SHARDS = config["embedding"]["shards"]
BACKBONES = config["training"]["backbones"]
SEEDS = config["training"]["seeds"]
VARIANTS = {name: variant_config(config, name) for name in config["variants"]}
# every model the run trains: each backbone, and the baseline when enabled
MODELS = [*BACKBONES, *([BASELINE] if config["baseline"]["enabled"] else [])]
check_comparisons(config)  # rows the run makes; a step's settings alone cannot tell


wildcard_constraints:
    shard=r"\d+",
    seed=r"\d+",
    backbone="|".join(re.escape(name) for name in backbone_names()),
    model="|".join(re.escape(name) for name in [*backbone_names(), BASELINE]),
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


def chosen_models(section):
    """The models of `<section>.models` (empty: every model the run trains), each checked."""
    models = config[section]["models"] or MODELS
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(
            f"config key '{section}.models': {unknown} not trained here; expected some of {MODELS}"
        )
    return models


# Each stage's input functions and lists of files, in common/ under its rule file's name.
include: "common/data.smk"
include: "common/embed.smk"
include: "common/train.smk"
include: "common/domain.smk"
include: "common/predict.smk"
include: "common/explain.smk"
include: "common/report.smk"


def get_final_output():
    """The targets of `all`: every product of the design (so that a deleted one is rebuilt), the
    figures and the report; the predictions when `predict.source` is set, the explanations
    when `explain.enabled`. Each stage lists its own files (common/<stage>.smk)."""
    return [
        *rules.prepare_data.output,
        *rules.merge_embeddings.output,
        *rules.fit_mapping.output,
        *rules.render_images.output,
        *rules.plot_mapping.output,
        *training_products(),
        *metrics_files(),
        *predictions_files(),
        *bundle_files(),
        *domain_files(),
        *rules.report.output,
        *(predict_files() if config["predict"]["source"] else []),
        *explain_reported(),
    ]


onstart:
    acquire_outdir(OUT)


onsuccess:
    release_outdir(OUT)


onerror:
    release_outdir(OUT)
