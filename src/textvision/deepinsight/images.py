"""Reading `images.h5` (written by `render_images`): images `[N, P, P]`, labels, splits, the
training pixels' moments and the file's attributes, checked against each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textvision.core.errors import InputError
from textvision.core.io import attrs_dict, check_finite, decode, open_h5


@dataclass(frozen=True)
class Images:
    """The contents of `images.h5`: one image per text, its id, label and split; the training
    pixels' moments (`pixel_mean`, `pixel_std`, None in files without them) and the attributes
    (grid, discretisation, label names, the Z-normalisation's `mu`, `sigma`, `eps`)."""

    images: np.ndarray
    id: np.ndarray
    label: np.ndarray
    split: np.ndarray
    attrs: dict
    pixel_mean: np.ndarray | None = None
    pixel_std: np.ndarray | None = None


def load_images(path: str | Path) -> Images:
    """Images, labels and splits from `images.h5`, checked against the file's own attributes."""
    with open_h5(path, "images", "id", "label", "split") as fh:
        attrs = attrs_dict(fh)
        images = fh["images"][:]
        pixels = attrs.get("pixels")
        if images.ndim != 3 or images.shape[1:] != (pixels, pixels):
            raise InputError(
                f"{path}: dataset 'images' has shape {images.shape}; the mapping gives "
                f"{pixels}x{pixels} pixels (expected [N, {pixels}, {pixels}])"
            )
        check_finite(images, path, "images")
        stats = {k: fh[k][:] for k in ("pixel_mean", "pixel_std") if k in fh}
        return Images(
            images=images,
            id=decode(fh["id"][:]),
            label=fh["label"][:].astype(np.int64),
            split=decode(fh["split"][:]),
            attrs=attrs,
            **stats,
        )
