"""The natural images the text images are compared with: crops of scikit-learn's sample photographs
or of a folder of JPEG/PNG photos, ImageNet-normalised as the backbones saw them in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from textvision.core.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _reference_photos(reference: str) -> tuple[list[np.ndarray], list[str]]:
    """RGB photos as float32 `[H, W, 3]` in [0, 1], and their names."""
    if reference == "sklearn":
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        return [img.astype(np.float32) / 255 for img in bunch.images], [
            Path(f).name for f in bunch.filenames
        ]
    from matplotlib.image import imread

    folder = Path(reference)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not folder.is_dir() or not files:
        raise InputError(
            f"domain.reference {reference}: expected 'sklearn' or a folder holding JPEG/PNG "
            "images, found none"
        )
    photos = []
    for path in files:
        try:
            img = np.asarray(imread(path))
        except (OSError, ValueError, SyntaxError) as err:
            raise InputError(f"{path}: not a readable JPEG/PNG image ({err})") from err
        img = img.astype(np.float32) / 255 if img.dtype == np.uint8 else img.astype(np.float32)
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        photos.append(img)
    return photos, [p.name for p in files]


def _random_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A square of random side (from `size`, or the short side if smaller, up to the short side)
    and position, resized to `size` x `size`: `[3, size, size]`."""
    height, width = photo.shape[:2]
    short = min(height, width)
    side = int(rng.integers(min(size, short), short + 1))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = torch.from_numpy(np.ascontiguousarray(photo[top : top + side, left : left + side]))
    crop = crop.permute(2, 0, 1)[None]
    if side != size:
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)
    return crop[0].clamp(0, 1)


def load_reference(reference: str, n: int, size: int, seed: int) -> tuple[torch.Tensor, dict]:
    """`n` natural crops `[n, 3, size, size]` in [0, 1], spread evenly over the reference photos
    (seeded), and what they are."""
    photos, names = _reference_photos(reference)
    small = [
        (name, p.shape) for name, p in zip(names, photos, strict=True) if min(p.shape[:2]) < size
    ]
    if small:
        name, shape = small[0]
        raise InputError(
            f"domain.reference {reference}: photo {name} is {shape[1]}x{shape[0]} pixels, smaller "
            f"than the slice's input ({size}x{size}; {len(small)} such photo(s)): enlarged, it "
            f"would be no natural image; expected photos of at least {size} pixels on each side"
        )
    rng = np.random.default_rng(seed)
    crops = torch.stack([_random_crop(photos[i % len(photos)], size, rng) for i in range(n)])
    source = (
        "sklearn.datasets.load_sample_images() (scikit-learn's bundled photographs)"
        if reference == "sklearn"
        else f"folder {reference}"
    )
    return crops, {
        "reference": reference,
        "source": source,
        "photos": names,
        "n_images": n,
        "size": size,
        "crops": "random squares (side from the input size to the photo's short side), resized",
    }


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std
