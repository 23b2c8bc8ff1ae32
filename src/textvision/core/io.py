"""Atomic writes and the small HDF5/Parquet helpers every stage shares."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from textvision.core.errors import InputError, OutputError

STALE_AFTER_S = 2 * 24 * 3600  # another host's temporary is cleared only after this long


_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


FULL_DISK = os.strerror(errno.ENOSPC)
NEARLY_FULL_BYTES = 1 << 20  # free space under which a failed write is put down to a full disk


def write_failure(err: BaseException, path: Path) -> str | None:
    """Why writing `path` failed, in one line, where the cause is the file system (a full disk,
    a quota, a read-only or forbidden folder); None for any other error. Libraries report a full
    disk in their own words (torch: "unexpected pos", HDF5: "file write failed"), so an error
    other than an OSError counts as a full disk when the folder has all but no space left."""
    if isinstance(err, OSError) and err.errno in _WRITE_ERRORS:
        return os_reason(err)
    if "No space left on device" in str(err):
        return FULL_DISK
    if isinstance(err, (OSError, RuntimeError)):
        with contextlib.suppress(OSError):
            if shutil.disk_usage(path.parent).free < NEARLY_FULL_BYTES:
                return FULL_DISK
    return None


def nearest_existing(path: str | Path) -> Path:
    """`path` itself or its nearest parent that exists (`.` for a relative path with none)."""
    path = Path(path)
    return next((p for p in (path, *path.parents) if p.exists()), Path("."))


def check_free_space(path: str | Path, nbytes: int) -> None:
    """Refuse, before any work, to write about `nbytes` into `path`'s folder where it has less
    free space (some writers, HDF5 among them, do not survive a full disk)."""
    path = Path(path)
    folder = nearest_existing(path.parent)
    free = shutil.disk_usage(folder).free
    if free < nbytes:
        raise OutputError(
            f"{path}: cannot write ({FULL_DISK}: about {nbytes / 2**20:,.0f} MB needed, "
            f"{free / 2**20:,.0f} MB free in {folder})"
        )


def os_reason(err: OSError) -> str:
    """What the operating system said, in one line (libraries' long wrappers dropped)."""
    if err.errno:
        return os.strerror(err.errno)
    return (err.strerror or str(err)).splitlines()[0]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary name beside `path` (`.<name>.tmp-<host>-<pid>`); rename onto `path`
    only if the block succeeds. Temporaries of dead writers on this host are cleared; those of
    other hosts (a shared file system) only once they are `STALE_AFTER_S` old. A full disk, a
    read-only or forbidden folder stop with an `OutputError` naming `path`."""
    path = Path(path)
    existing = nearest_existing(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else os_reason(err)
        raise OutputError(f"{path}: cannot create its folder ({reason})") from err
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if _abandoned(stale, stale.name.removeprefix(f".{path.name}.tmp-")):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        reason = write_failure(err, tmp)
        if reason is None:
            raise
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        remove_empty_folders(path.parent, existing)
        raise OutputError(f"{path}: cannot write ({reason})") from err
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def remove_empty_folders(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to (not including) `stop` while they are empty: what
    a failed write made and left empty."""
    folder, stop = Path(folder).absolute(), Path(stop).absolute()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


@contextlib.contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `folder` (`.<name>.tmp-<host>-<pid>`); when the block
    succeeds it replaces `folder` (an older one is removed), else it is removed."""
    folder = Path(folder)
    owner = f"{socket.gethostname()}-{os.getpid()}"
    tmp = folder.with_name(f".{folder.name}.tmp-{owner}")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, expected a folder (or nothing)")
    shutil.rmtree(tmp, ignore_errors=True)
    existing = nearest_existing(folder.parent)
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        remove_empty_folders(folder.parent, existing)
        raise OutputError(f"{folder}: cannot create it ({os_reason(err)})") from err
    try:
        try:
            yield tmp
        except OutputError as err:  # a file inside: named as it would have been in `folder`
            raise OutputError(str(err).replace(str(tmp), str(folder))) from err.__cause__
        except (OSError, RuntimeError) as err:  # written inside without `atomic_path`
            reason = write_failure(err, tmp / "x")
            if reason is None:
                raise
            raise OutputError(f"{folder}: cannot write ({reason})") from err
        old = folder.with_name(f".{folder.name}.old-{owner}")
        if folder.is_dir() and any(folder.iterdir()):
            os.replace(folder, old)
        elif folder.is_dir():
            folder.rmdir()
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.exists():
            remove_empty_folders(folder.parent, existing)


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


def files_sha256(paths) -> str:
    """sha256 over the bytes of several files, one after the other, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    return files_sha256([path])


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


CHECKSUM_ROWS = 4096  # rows hashed at a time: memory stays flat


def content_sha256(fh: h5py.File) -> str:
    """sha256 over every dataset (name, dtype, shape, bytes) and attribute but `sha256`."""
    digest = hashlib.sha256()
    names: list[str] = []
    fh.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
    for name in sorted(names):
        data = fh[name]
        digest.update(f"{name}|{data.dtype}|{data.shape}".encode())
        if data.shape == ():
            digest.update(_bytes(np.asarray(data[()])))
            continue
        for lo in range(0, data.shape[0], CHECKSUM_ROWS):
            digest.update(_bytes(data[lo : lo + CHECKSUM_ROWS]))
    attrs = {k: v for k, v in attrs_dict(fh).items() if k != "sha256"}
    digest.update(json.dumps(attrs, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _bytes(values: np.ndarray) -> bytes:
    """The content of an array; variable-length strings by value, not by address."""
    if values.dtype == object:
        return b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in values.ravel())
    return np.ascontiguousarray(values).tobytes()


def seal(fh: h5py.File) -> None:
    """Record the file's content checksum (attribute `sha256`), last thing before closing."""
    fh.attrs["sha256"] = content_sha256(fh)


def verify_sealed(path: str | Path, rule: str) -> None:
    """Stop, naming the command that rebuilds it (Snakemake's `rule`), when the file's content
    does not match its checksum."""
    with open_h5(path) as fh:
        recorded = fh.attrs.get("sha256")
        if recorded is None:
            problem = "carries no content checksum (written by an older textvision or by hand)"
        elif recorded != content_sha256(fh):
            problem = "is corrupted or was modified: its content does not match its checksum"
        else:
            return
    raise InputError(f"{path}: {problem}; rebuild it with `snakemake --forcerun {rule}`")


def check_finite(
    array: np.ndarray, path: str | Path, dataset: str, row_index: np.ndarray | None = None
) -> None:
    """Stop at the first NaN or inf, naming its position in the file (`row_index` maps the
    rows of `array` to the file's rows when it holds a selection)."""
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        if row_index is not None:
            bad[0] = int(row_index[bad[0]])
        raise InputError(f"{path}: dataset '{dataset}' holds NaN or inf values (first at {bad})")


def string_array(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=h5py.string_dtype())


def decode(values: np.ndarray) -> np.ndarray:
    return np.asarray([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
