"""Variants: named overrides of `deepinsight` and `training` keys, built beside the main run by
the same workflow (sharing every upstream output they do not change) and compared with it in
one report. Report rows are named `backbone` (the main run), `variant/backbone` and `logreg`."""

from __future__ import annotations

from textvision.config.schema import prepare_config
from textvision.config.settings import deep_merge
from textvision.core.errors import ConfigError

BASELINE = "logreg"


def variant_config(config: dict, name: str) -> dict:
    """The validated config of variant `name`: the main config with its overrides merged in."""

    base = {k: v for k, v in config.items() if k not in ("variants", "report")}
    try:
        variant = prepare_config(deep_merge(base, config["variants"][name]))
    except ConfigError as err:
        raise ConfigError(
            str(err).replace("config key '", f"config key 'variants.{name}.")
        ) from err
    if all(variant[key] == config[key] for key in ("deepinsight", "training")):
        raise ConfigError(
            f"config key 'variants.{name}': changes no setting, so the variant would train a "
            "copy of the main run; expected `deepinsight` or `training` keys set to other values"
        )
    return variant


def shares_images(config: dict, name: str) -> bool:
    """Whether variant `name` keeps the main run's DeepInsight settings (and so its images)."""
    return variant_config(config, name)["deepinsight"] == config["deepinsight"]


def row_names(config: dict) -> list[str]:
    """Every report row a config produces, main rows first."""
    rows = list(config["training"]["backbones"])
    if config["baseline"]["enabled"]:
        rows.append(BASELINE)
    for name in config["variants"]:
        rows += [f"{name}/{b}" for b in variant_config(config, name)["training"]["backbones"]]
    return rows


def default_comparisons(rows: list[str]) -> list[list[str]]:
    """Each variant row against the main row of its backbone, then each main image row against
    the logistic baseline (when both exist)."""
    main = [r for r in rows if "/" not in r and r != BASELINE]
    pairs = [[r, r.split("/", 1)[1]] for r in rows if "/" in r and r.split("/", 1)[1] in main]
    if BASELINE in rows:
        pairs += [[r, BASELINE] for r in main]
    return pairs


def check_comparisons(config: dict) -> None:
    """Every `report.comparisons` pair names two different rows the config produces."""
    rows = row_names(config)
    for i, pair in enumerate(config["report"]["comparisons"]):
        unknown = [r for r in pair if r not in rows]
        if unknown:
            raise ConfigError(
                f"config key 'report.comparisons.{i}': {unknown} not a row of this run; "
                f"expected two of {rows}"
            )
        if pair[0] == pair[1]:
            raise ConfigError(
                f"config key 'report.comparisons.{i}': compares {pair[0]!r} with itself"
            )
