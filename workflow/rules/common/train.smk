# train.smk's input functions, and the files of its jobs that other stages and `all` read.
from pathlib import Path

from textvision.config.schema import weights_for
from textvision.config.settings import TrainSettings, step_params
from textvision.config.variants import BASELINE, shares_images
from textvision.core.errors import ConfigError, InputError
from textvision.core.registry import RANDOM_WEIGHTS, is_weights_file


def check_slices():
    """What a training job would refuse about its slice, checked for every backbone of the run
    and of its variants before any job runs (so a refused rerun never starts): a weights file
    (loadable, the slice's tensors in their shapes, finite) and BatchNorm to adapt (present, not
    folded). torch is imported only where such a check is due."""
    due = set()
    for name, cfg in [
        ("", config),
        *((f"variants.{v}.", c) for v, c in VARIANTS.items()),
    ]:
        for backbone in cfg["training"]["backbones"]:
            settings = TrainSettings.from_config(cfg, backbone=backbone)
            weights, batchnorm = settings.weights, settings.batchnorm
            if is_weights_file(weights) or batchnorm == "adapt":
                # ImageNet's own statistics are real: only the slice's BatchNorm is checked
                weights = weights if is_weights_file(weights) else RANDOM_WEIGHTS
                due.add((name, backbone, weights, batchnorm))
    if not due:
        return
    from textvision.models.network import check_backbone

    for prefix, backbone, weights, batchnorm in sorted(due):
        try:
            check_backbone(backbone, weights, batchnorm)
        except InputError as err:
            raise ConfigError(
                f"config keys '{prefix}training.weights' / '{prefix}training.batchnorm' of "
                f"{backbone}: {err}"
            ) from None


check_slices()


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


def training_products():
    """Every output of every training job (main run, baseline, variants) and the mapping and
    images a variant renders for itself: targets of `all`, so a deleted one is rebuilt.
    """
    files = expand(list(rules.train.output), backbone=BACKBONES, seed=SEEDS)
    if config["baseline"]["enabled"]:
        files += list(rules.baseline_logreg.output)
    for variant, vconfig in VARIANTS.items():
        files += expand(
            list(rules.train_variant.output),
            variant=variant,
            backbone=vconfig["training"]["backbones"],
            seed=vconfig["training"]["seeds"],
        )
        if not shares_images(config, variant):
            rendered = [
                *rules.fit_mapping_variant.output,
                *rules.render_images_variant.output,
            ]
            files += expand(rendered, variant=variant)
    return files


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
