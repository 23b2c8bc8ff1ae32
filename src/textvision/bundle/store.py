"""A portable model bundle: one folder that classifies raw texts without the run that made it.

`bundle/bundle.json` holds everything textual (textvision version and bundle format, the encoder
and the sha256 of its weights, layers, max_length, clean_html, DeepInsight's parameters, the input
normalisation, the backbone and its weights' identifier, the class names, the sha256 of the
tensors file); `bundle/tensors.safetensors` every number (DeepInsight's fitted arrays, mu/sigma,
the best epoch's head and classifier, the frozen slice's weights unless they are torchvision's
ImageNet weights, referenced by name; for the baseline the scaler and logistic regression).
Nothing is pickled: the tensors are read with safetensors, the rest is JSON. The bundle is
sealed whole: `bundle.json`'s `seal` is the sha256 of its own content (which holds the tensors
file's sha256), checked at every load, so an edit of either file is refused, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from textvision import __version__
from textvision.core.errors import InputError
from textvision.core.io import atomic_folder, atomic_path, file_sha256, write_json
from textvision.core.registry import BUNDLE_FILES

FORMAT = 3  # 3: the image method recorded; 2: sealed whole (1 sealed only the tensors)
META, TENSORS = BUNDLE_FILES  # the text, the numbers
ENCODER_KEYS = ("model", "weights_sha256", "layers", "max_length", "clean_html", "precision")


def encoder_meta(attrs: dict) -> dict:
    """The encoder part of a bundle from the attributes of embeddings.h5 (or images.h5)."""
    missing = [k for k in ENCODER_KEYS if k not in attrs]
    if missing:
        raise InputError(
            f"no model bundle: the inputs lack the encoder's {missing} (not made by "
            "`textvision embed`)"
        )
    return {k: attrs[k] for k in ENCODER_KEYS}


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().contiguous().numpy()
    array = np.asarray(value)
    return array if array.flags.c_contiguous else array.copy(order="C")


def write_bundle(folder: str | Path, meta: dict, tensors: dict) -> None:
    """Write `folder/bundle.json` and `folder/tensors.safetensors` into a temporary folder
    beside `folder`, then put it in place with one rename (an older bundle is replaced)."""
    from safetensors.numpy import save_file

    with atomic_folder(folder) as tmpdir:
        with atomic_path(tmpdir / TENSORS) as tmp:
            save_file({k: _numpy(v) for k, v in tensors.items()}, str(tmp))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        full = {
            "format": FORMAT,
            "textvision_version": __version__,
            **meta,
            "tensors_sha256": file_sha256(tmpdir / TENSORS),
        }
        write_json(tmpdir / META, sealed(full))


def sealed(meta: dict) -> dict:
    """`meta` with its `seal`: the sha256 of its canonical JSON (keys sorted), seal left out."""
    content = {k: v for k, v in meta.items() if k != "seal"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {**content, "seal": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def read_meta(folder: str | Path) -> dict:
    """bundle.json, refused (one line) when missing, of another format or textvision version,
    when the tensors file's sha256 differs from the one it records, or when bundle.json itself
    was edited (its seal differs)."""
    folder = Path(folder)
    path = folder / META
    if not path.is_file():
        raise InputError(f"{folder}: not a model bundle (no {META})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err
    version = str(meta.get("textvision_version", "?"))
    if version.split(".")[:2] != __version__.split(".")[:2]:
        raise InputError(
            f"{folder}: bundle format {meta.get('format')} from textvision {version}; this is "
            f"textvision {__version__} (format {FORMAT}): retrain, or predict with textvision "
            f"{'.'.join(version.split('.')[:2])}.x"
        )
    if meta.get("format") != FORMAT:
        raise InputError(
            f"{folder}: bundle format {meta.get('format')}; this textvision {__version__} reads "
            f"format {FORMAT}: train the model again to make its bundle"
        )
    tensors = folder / TENSORS
    if not tensors.is_file():
        raise InputError(f"{folder}: no {TENSORS}")
    if file_sha256(tensors) != meta.get("tensors_sha256"):
        raise InputError(
            f"{tensors}: sha256 differs from the one {META} records: the bundle was modified "
            "or damaged; copy it again from the training run"
        )
    if sealed(meta)["seal"] != meta.get("seal"):
        raise InputError(
            f"{path}: edited after the bundle was written (its seal differs): the bundle was "
            "modified or damaged; copy it again from the training run"
        )
    return meta


def load_tensors(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(folder / TENSORS))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise InputError(f"{folder / TENSORS}: not a readable safetensors file ({err})") from err


def check_shape(folder: Path, name: str, array: np.ndarray, shape: tuple) -> None:
    if tuple(array.shape) != tuple(shape):
        raise InputError(
            f"{folder / TENSORS}: tensor {name!r} has shape {tuple(array.shape)}, expected "
            f"{tuple(shape)}: the bundle was modified or damaged"
        )


def require_tensors(folder: Path, tensors: dict, names) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise InputError(f"{folder / TENSORS}: missing tensor(s) {missing}")
