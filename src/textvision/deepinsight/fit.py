"""The `fit_mapping` step: DeepInsight fitted on the chosen rows, stored as `mapping.h5`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from textvision.config.settings import MappingSettings
from textvision.core.errors import ConfigError, InputError
from textvision.deepinsight.base import PixelMapTransformer, check_grid
from textvision.deepinsight.methods import get_method
from textvision.deepinsight.store import save_mapping
from textvision.embed.store import n_features, read_embeddings, read_splits

log = logging.getLogger(__name__)


SHARED_KEYS = ("pixels", "scaler", "empty_value", "layout", "layout_seed", "chunk_size")


def transformer_params(settings: MappingSettings) -> dict:
    """The parameters of the chosen method's transformer from the `deepinsight` settings: the
    keys every method shares and the method's own (`deepinsight`: `projector` ... and those of
    `tsne` and `umap`, `tsne.seed` as `random_state`, `umap.metric` as `umap_metric`; `igtd`:
    those of `igtd`; `refined`: those of `refined`, `refined.seed` as `random_state`)."""
    values = settings.to_dict()
    params = {key: values[key] for key in SHARED_KEYS}
    if settings.method == "deepinsight":
        tsne, umap = values["tsne"], values["umap"]
        random_state = tsne.pop("seed")
        umap["umap_metric"] = umap.pop("metric")
        sections = ("tsne", "umap")
        keys = [k for k in MappingSettings.METHOD_KEYS["deepinsight"] if k not in sections]
        own = {k: values[k] for k in keys}
        return {**params, **own, **tsne, **umap, "random_state": random_state}
    if settings.method == "igtd":
        return {**params, **values["igtd"]}
    if settings.method == "refined":
        refined = values["refined"]
        random_state = refined.pop("seed")
        return {**params, **refined, "random_state": random_state}
    return params


MIN_FEATURES_PER_PIXEL = 0.1  # a grid with 10x more pixels than features is refused


def check_against_features(settings: MappingSettings, features: int, embeddings) -> None:
    """Stop before the fit when the settings cannot work for this many features."""
    try:
        check_grid(get_method(settings.method), settings.pixels, features)
    except ValueError as err:
        raise ConfigError(f"config key 'deepinsight.pixels' ({embeddings}): {err}") from None
    perplexity = settings.tsne.perplexity
    deepinsight = settings.method == "deepinsight"
    if deepinsight and settings.projector == "tsne" and perplexity >= features:
        raise ConfigError(
            f"config key 'deepinsight.tsne.perplexity': {perplexity} is not below the "
            f"{features} features of {embeddings} (t-SNE places the features; lower it)"
        )
    pixels = settings.pixels
    if features < MIN_FEATURES_PER_PIXEL * pixels**2:
        limit = int((features / MIN_FEATURES_PER_PIXEL) ** 0.5)
        raise ConfigError(
            f"config key 'deepinsight.pixels': {pixels}x{pixels} = {pixels**2} pixels for the "
            f"{features} features of {embeddings}, over 10 pixels per feature; at most {limit}"
        )


def fit_mapping(
    embeddings: str | Path,
    out: str | Path,
    settings: MappingSettings,
    threads: int | None = None,
) -> PixelMapTransformer:
    """Fit the chosen method's transformer on the training rows (or all rows, `fit_on: all`)
    and save it as HDF5."""
    fit_on = settings.fit_on
    check_against_features(settings, n_features(embeddings), embeddings)
    split = read_splits(embeddings)
    if fit_on == "all":
        log.warning(
            "deepinsight.fit_on=all: scaler and projection see the validation/test rows; "
            "this reproduces the original code and leaks into validation accuracy"
        )
        rows = np.ones(len(split), bool)
    else:
        rows = split == "train"
    if rows.sum() < 2:
        raise InputError(f"{embeddings}: {rows.sum()} rows to fit on (fit_on={fit_on})")
    X, attrs = read_embeddings(embeddings, rows)
    method = get_method(settings.method)
    transformer = method(**transformer_params(settings), n_jobs=threads).fit(X)
    save_mapping(
        transformer,
        out,
        {
            "fit_on": fit_on,
            "n_fit_rows": int(rows.sum()),
            "layers": attrs["layers"],
            "model": attrs["model"],
            "hidden_size": X.shape[1] // len(attrs["layers"]),
        },
    )
    log.info("mapping %s: %s", out, transformer.occupancy_)
    return transformer
