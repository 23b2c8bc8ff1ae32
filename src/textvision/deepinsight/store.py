"""Reading and writing `mapping.h5`: a fitted image method's state (its name, parameters, the
feature -> pixel map, the scaler's statistics and the method's own fitted arrays) and what it
was fitted on, sealed by a content hash."""

from __future__ import annotations

from pathlib import Path

import h5py

from textvision.core.errors import InputError
from textvision.core.io import atomic_path, attrs_dict, open_h5, seal, set_attrs, verify_sealed
from textvision.deepinsight.base import PixelMapTransformer
from textvision.deepinsight.methods import get_method

_STATE = ("pixels_", "feature_counts_")  # every method's; each adds its own `_STATE`


def save_mapping(transformer: PixelMapTransformer, out: str | Path, info: dict) -> None:
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as fh:
        for name in (*transformer._STATE, *_STATE):
            fh[name.rstrip("_")] = getattr(transformer, name)
        scale = fh.create_group("scale")
        for key, value in transformer.scale_.items():
            scale[key] = value
        set_attrs(
            fh,
            {
                "method": transformer.method,
                # how it was fitted; not the thread count, which changes nothing
                "params": {k: v for k, v in transformer.get_params().items() if k != "n_jobs"},
                "occupancy": transformer.occupancy_,
                "n_features": transformer.n_features_in_,
                **info,
            },
        )
        seal(fh)


def load_mapping(path: str | Path) -> tuple[PixelMapTransformer, dict]:
    """The fitted transformer stored in `mapping.h5`, and the file's attributes; the file's
    content checksum is verified first."""
    verify_sealed(path, "fit_mapping")
    with open_h5(path, *(name.rstrip("_") for name in _STATE), "scale") as fh:
        attrs = attrs_dict(fh)
        try:
            transformer = get_method(attrs["method"])(**attrs["params"])
        except ValueError as err:
            raise InputError(f"{path}: {err}") from None
        for name in (*transformer._STATE, *_STATE):
            setattr(transformer, name, fh[name.rstrip("_")][()])
        transformer.scale_ = {key: fh["scale"][key][()] for key in fh["scale"]}
    transformer.n_features_in_ = attrs["n_features"]
    return transformer, attrs
