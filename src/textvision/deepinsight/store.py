"""Reading and writing `mapping.h5`: a fitted DeepInsight transformer's state and what it was
fitted on, sealed by a content hash."""

from __future__ import annotations

from pathlib import Path

import h5py

from textvision.core.io import atomic_path, attrs_dict, open_h5, seal, set_attrs, verify_sealed
from textvision.deepinsight.transformer import DeepInsightTransformer

_STATE = ("embedding_", "rotation_", "coords_", "pixels_", "feature_counts_")


def save_mapping(transformer: DeepInsightTransformer, out: str | Path, info: dict) -> None:
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as fh:
        for name in _STATE:
            fh[name.rstrip("_")] = getattr(transformer, name)
        scale = fh.create_group("scale")
        for key, value in transformer.scale_.items():
            scale[key] = value
        set_attrs(
            fh,
            {
                # how it was fitted; not the thread count, which changes nothing
                "params": {k: v for k, v in transformer.get_params().items() if k != "n_jobs"},
                "occupancy": transformer.occupancy_,
                "n_features": transformer.n_features_in_,
                **info,
            },
        )
        seal(fh)


def load_mapping(path: str | Path) -> tuple[DeepInsightTransformer, dict]:
    """The fitted transformer stored in `mapping.h5`, and the file's attributes; the file's
    content checksum is verified first."""
    verify_sealed(path, "fit_mapping")
    with open_h5(path, *(name.rstrip("_") for name in _STATE), "scale") as fh:
        attrs = attrs_dict(fh)
        transformer = DeepInsightTransformer(**attrs["params"])
        for name in _STATE:
            setattr(transformer, name, fh[name.rstrip("_")][()])
        transformer.scale_ = {key: fh["scale"][key][()] for key in fh["scale"]}
    transformer.n_features_in_ = attrs["n_features"]
    return transformer, attrs
