"""Atomic writes and the small HDF5/Parquet helpers every stage shares."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from textvision.errors import InputError

STALE_AFTER_S = 2 * 24 * 3600  # another host's temporary is cleared only after this long


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary name beside `path` (`.<name>.tmp-<host>-<pid>`); rename onto `path`
    only if the block succeeds. Temporaries of dead writers on this host are cleared; those of
    other hosts (a shared file system) only once they are `STALE_AFTER_S` old."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if _abandoned(stale, stale.name.removeprefix(f".{path.name}.tmp-")):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _abandoned(tmp: Path, owner: str) -> bool:
    """Whether the writer `<host>-<pid>` of `tmp` is surely gone."""
    host, _, pid = owner.rpartition("-")
    if host == socket.gethostname():
        return not _alive(pid)
    try:
        return time.time() - tmp.stat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return False


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise InputError(f"{path}: file not found") from err
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err


def open_h5(path: str | Path, *datasets: str) -> h5py.File:
    """Open an HDF5 file for reading, checking that the named datasets exist."""
    try:
        fh = h5py.File(path, "r")
    except FileNotFoundError as err:
        raise InputError(f"{path}: file not found") from err
    except OSError as err:
        raise InputError(f"{path}: not a readable HDF5 file ({err})") from err
    missing = [name for name in datasets if name not in fh]
    if missing:
        found = sorted(fh)
        fh.close()
        raise InputError(f"{path}: missing dataset(s) {missing}; found {found}")
    return fh


def attrs_dict(node: h5py.HLObject) -> dict:
    """HDF5 attributes as plain Python values (JSON-encoded strings are decoded)."""
    out = {}
    for key, value in node.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and value[:1] in "[{":
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        out[key] = value
    return out


def set_attrs(node: h5py.HLObject, attrs: dict) -> None:
    for key, value in attrs.items():
        node.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value


def check_finite(array: np.ndarray, path: str | Path, dataset: str) -> None:
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise InputError(f"{path}: dataset '{dataset}' holds NaN or inf values (first at {bad})")


def string_array(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=h5py.string_dtype())


def decode(values: np.ndarray) -> np.ndarray:
    return np.asarray([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
