# domain.smk's input functions and lists of files.
from textvision.config.settings import DomainSettings, step_params


def reference_input(wildcards):
    """The folder of natural images, if one is configured (`sklearn`: none)."""
    reference = config["domain"]["reference"]
    return [] if reference == "sklearn" else [reference]


def domain_params(wildcards):
    """The domain-shift settings resolved for this job's backbone (its weights; no learning
    rates: a learning-rate change leaves these jobs alone)."""
    return step_params(DomainSettings, config, backbone=wildcards.backbone)


def domain_results():
    """Each backbone's domain-shift JSON (what the report reads)."""
    return expand(rules.domain_shift.output.json, backbone=BACKBONES)


def domain_files():
    """Every output of each backbone's domain-shift job: its JSON and figures."""
    return expand(list(rules.domain_shift.output), backbone=BACKBONES)
