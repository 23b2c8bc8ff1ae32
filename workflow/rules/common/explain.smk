# explain.smk's input functions and lists of files.
from textvision.config.variants import BASELINE


def explain_job(model):
    """The rule that explains `model`, and the job's wildcards."""
    if model == BASELINE:
        return rules.explain_logreg, {}
    return rules.explain_backbone, {"backbone": model}


def explain_targets(wildcards):
    """The index page of every model `snakemake explain` explains (`explain.models`)."""
    jobs = map(explain_job, chosen_models("explain"))
    return [expand(rule.output.index, **values)[0] for rule, values in jobs]


def explain_reported():
    """The explain pages the report links: every `explain_targets` page with `explain.enabled`."""
    return explain_targets(None) if config["explain"]["enabled"] else []


def explain_benchmarks():
    """The benchmark file of every job of `explain_reported`."""
    models = chosen_models("explain") if config["explain"]["enabled"] else []
    jobs = map(explain_job, models)
    return [expand(rule.benchmark, **values)[0] for rule, values in jobs]


def backbone_bundle(wildcards):
    """The bundle `explain_backbone` explains."""
    return bundle_of(wildcards.backbone)
