# train.smk's input functions, and the files of its jobs that other stages and `all` read.
from pathlib import Path

from textvision.config.schema import weights_for
from textvision.config.settings import TrainSettings, step_params
from textvision.config.variants import BASELINE, shares_images
from textvision.core.registry import is_weights_file


def weights_input(wildcards):
    """The weights file of the job's backbone, if it has one (a changed file reruns the job)."""
    weights = weights_for(config, wildcards.backbone)
    return [weights] if is_weights_file(weights) else []


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
    """As `weights_input`, with the variant's weights."""
    weights = weights_for(VARIANTS[wildcards.variant], wildcards.backbone)
    return [weights] if is_weights_file(weights) else []


def variant_train_params(wildcards):
    """As `train_params`, with the variant's settings."""
    return step_params(
        TrainSettings, VARIANTS[wildcards.variant], backbone=wildcards.backbone
    )


def train_files(*names):
    """The named outputs (`model`, `history`, ...) of every training job of the main run."""
    return expand(
        [getattr(rules.train.output, name) for name in names],
        backbone=BACKBONES,
        seed=SEEDS,
    )


def metrics_files():
    """The metrics.json of every training job (main run, baseline, variants): the report's
    rows, in order."""
    files = train_files("metrics")
    if config["baseline"]["enabled"]:
        files += expand(rules.baseline_logreg.output.metrics)
    for name, vconfig in VARIANTS.items():
        files += expand(
            rules.train_variant.output.metrics,
            variant=name,
            backbone=vconfig["training"]["backbones"],
            seed=vconfig["training"]["seeds"],
        )
    return files


def predictions_files():
    """The per-example predictions beside every metrics file (what comparisons pair up)."""
    return [str(Path(f).with_name("predictions.parquet")) for f in metrics_files()]


def bundle_files():
    """The model bundle of every training job of the main run and of the baseline."""
    files = expand(rules.train.output.bundle, backbone=BACKBONES, seed=SEEDS)
    if config["baseline"]["enabled"]:
        files += expand(rules.baseline_logreg.output.bundle)
    return files


def bundle_of(model):
    """The bundle files `predict` and `explain` read for a model: the baseline's, or the
    backbone's first seed's."""
    if model == BASELINE:
        return expand(rules.baseline_logreg.output.bundle)
    return expand(rules.train.output.bundle, backbone=model, seed=SEEDS[0])
