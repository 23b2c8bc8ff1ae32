"""The names the workflow's rules and the package share, each declared once: the figures each
stage writes, the two files of a model bundle, the inputs the domain-shift step compares (with
their colours and descriptions), and the kinds of `training.weights` that are not a file.

Plain data, the standard library only: `workflow/rules/*.smk` read it when Snakemake parses the
workflow, and the writers name their files from it, so a rule's outputs and the files its step
writes are one list. Like the backbone registry, a list refuses a name given twice.
"""

from __future__ import annotations

from dataclasses import dataclass


def unique(*names: str) -> tuple[str, ...]:
    """`names` in order as a tuple; a name given twice is refused."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{repeated} registered twice")
    return names


# --- training.weights ----------------------------------------------------------------------
IMAGENET = "imagenet"  # torchvision's pretrained weights
RANDOM_WEIGHTS = "none"  # the slice as initialised: no transfer
WEIGHTS_KINDS = unique(IMAGENET, RANDOM_WEIGHTS)  # any other value is a state_dict file


def is_weights_file(weights: str) -> bool:
    """Whether a `training.weights` value names a state_dict file (not one of WEIGHTS_KINDS)."""
    return weights not in WEIGHTS_KINDS


# --- files of each stage (figures: `<name>.png`) ---------------------------------------------
DEEPINSIGHT_FIGURES = unique("feature_density", "class_means", "samples", "feature_map")
REPORT_FIGURES = unique(
    "accuracy", "learning_curves", "confusion", "comparisons", "layouts", "costs"
)
REPORT_DOMAIN_FIGURE = "domain_shift"  # the report's figure of the domain-shift step's results
DOMAIN_FIGURES = unique("inputs", "normalisation", "histograms", "frechet")  # `{backbone}_<name>`
EXPLAIN_FIGURES = unique("attribution_map", "layer_attribution")  # with `explain --dataset`
BUNDLE_FILES = unique("bundle.json", "tensors.safetensors")  # the text, the numbers


def png(name: str) -> str:
    """The file name of a figure."""
    return f"{name}.png"


# --- the domain-shift step's inputs ----------------------------------------------------------
@dataclass(frozen=True)
class DomainInput:
    """An input the domain-shift step passes through a backbone slice: its role (`text`: text
    images through the slice as loaded; `adapted`: through the slice adapted to them; `natural`:
    the reference crops), its colour in figures and its description in the step's JSON."""

    role: str
    colour: str
    description: str


DOMAIN_INPUTS: dict[str, DomainInput] = {}


def register_domain_input(name: str, role: str, colour: str, description: str) -> None:
    """Add an input to DOMAIN_INPUTS; refuse duplicates."""
    if name in DOMAIN_INPUTS:
        raise ValueError(f"domain input {name!r} is registered already")
    DOMAIN_INPUTS[name] = DomainInput(role, colour, description)


register_domain_input("raw", "text", "#8c8c8c", "text images as rendered, no normalisation")
register_domain_input(
    "zscore", "text", "#4c72b0", "the paper's scalar Z-normalisation (training mu and sigma)"
)
register_domain_input(
    "pixel", "text", "#55a868", "per-pixel normalisation (training mean and std maps)"
)
register_domain_input(
    "adapted",
    "adapted",
    "#dd8452",
    "Z-normalised text images through the slice with its BatchNorm statistics re-estimated on "
    "them (AdaBN), against the natural crops through the slice as loaded (random weights: "
    "through the slice adapted on the natural crops); BN KL against the re-estimated statistics",
)
register_domain_input(
    "natural",
    "natural",
    "#c44e52",
    "natural crops after ImageNet's normalisation (mean (0.485, 0.456, 0.406), std (0.229, "
    "0.224, 0.225))",
)

# the text variants (each text image through the slice as loaded), and every variant measured
# against the natural crops (those and the adapted slice)
TEXT_VARIANTS = tuple(name for name, spec in DOMAIN_INPUTS.items() if spec.role == "text")
DOMAIN_VARIANTS = tuple(name for name, spec in DOMAIN_INPUTS.items() if spec.role != "natural")
