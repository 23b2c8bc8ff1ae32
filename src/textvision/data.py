"""Labelled text from any source -> one normalised, split dataset (`dataset.parquet`)."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from textvision.dataset import write_dataset
from textvision.errors import InputError
from textvision.settings import DataSettings
from textvision.synthetic import make_corpus
from textvision.tables import _BR, check_texts, clean_text  # noqa: F401 - textvision.data.clean_text, _BR
from textvision.tables import load_table as _load_table
from textvision.tables import one_line as _one_line
from textvision.tables import rows as _rows

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_ACLIMDB = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


def load_source(
    source: str,
    text_column: str,
    label_column: str,
    id_column: str | None,
    synthetic: dict,
) -> pd.DataFrame:
    """Read a labelled source into columns id, text, label (raw label values)."""
    if source == "synthetic":
        return make_corpus(**synthetic)
    if source.startswith("hf:"):
        frame = _load_hf(source[3:], text_column, label_column)
        text_column, label_column = "text", "label"
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"{source}: file or folder not found")
        if path.is_dir() or path.name.endswith((".tar.gz", ".tgz")):
            return _load_aclimdb(path)
        frame = _load_table(path)
    for role, column in (("text", text_column), ("label", label_column), ("id", id_column)):
        if column is not None and column not in frame.columns:
            raise InputError(
                f"{source}: missing {role} column {column!r} (config key 'data.{role}_column'); "
                f"found columns {list(frame.columns)}"
            )
    ids = frame[id_column].astype(str) if id_column else [f"row-{i}" for i in range(len(frame))]
    return pd.DataFrame({"id": ids, "text": frame[text_column], "label": frame[label_column]})


def _load_aclimdb(path: Path) -> pd.DataFrame:
    """The authors' layout: aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt (folder or tarball)."""
    rows = []

    def add(name: str, data: bytes) -> None:
        match = _ACLIMDB.search(name)
        if match:
            split, label, num, _rating = match.groups()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{path}: {name}: invalid UTF-8 at byte {err.start} ({err.reason}); "
                    "expected UTF-8 text"
                ) from err
            rows.append((f"{split}/{label}/{num}", text, label))

    if path.is_dir():
        root = path if path.name == "aclImdb" else path / "aclImdb"
        for file in sorted(root.glob("*/*/*.txt")):
            add(file.relative_to(root.parent).as_posix(), file.read_bytes())
    else:
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:
                    if member.isfile() and _ACLIMDB.search(member.name):
                        add(member.name, tar.extractfile(member).read())
        except (tarfile.TarError, OSError, EOFError) as err:
            raise InputError(f"{path}: not a readable .tar.gz archive ({_one_line(err)})") from err
    if not rows:
        raise InputError(
            f"{path}: no reviews found; expected "
            "aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt"
        )
    rows.sort(key=lambda r: r[0])
    return pd.DataFrame(rows, columns=["id", "text", "label"])


def _load_hf(name: str, text_column: str, label_column: str) -> pd.DataFrame:
    import datasets

    try:
        dsets = datasets.load_dataset(name)
    except Exception as err:  # noqa: BLE001 - datasets raises many types for "not available"
        offline = (
            os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        )
        raise InputError(
            f"hf:{name}: cannot load the dataset ({type(err).__name__}: {_one_line(err)}). "
            + (
                "It is not in the local Hugging Face cache (HF_HUB_OFFLINE is set). "
                if offline
                else ""
            )
            + "On a machine with network run `snakemake prefetch` (or `textvision prefetch "
            "--config CONFIG`) with the same HF_HOME, then rerun with HF_HUB_OFFLINE=1."
        ) from err
    frames = []
    for split, dset in dsets.items():
        for column in (text_column, label_column):
            if column not in dset.column_names:
                raise InputError(
                    f"hf:{name} split {split!r}: missing column {column!r}; "
                    f"found {dset.column_names}"
                )
        frame = dset.to_pandas()[[text_column, label_column]]
        names = getattr(dset.features[label_column], "names", None)
        if names:  # a ClassLabel: -1 marks unlabelled rows (IMDB's 'unsupervised' split)
            frame = frame[frame[label_column] >= 0]
            frame[label_column] = frame[label_column].map(dict(enumerate(names)))
        frame.index = [f"{split}-{i}" for i in frame.index]
        frames.append(frame)
    frame = pd.concat(frames)
    return pd.DataFrame(
        {"id": frame.index, "text": frame[text_column].values, "label": frame[label_column].values}
    )


def validate_rows(
    frame: pd.DataFrame, source: str, columns: dict | None = None, cleaned: bool = False
) -> None:
    """Stop on empty texts (after HTML cleaning when `cleaned`), missing, blank, mixed-type or
    case-variant labels, duplicated ids or fewer than two classes. `columns` names the source's
    columns (keys text, label, id) in the messages."""
    names = {"text": "text", "label": "label", "id": "id", **(columns or {})}
    if len(frame) == 0:
        raise InputError(f"{source}: no data rows (only a header?); expected labelled texts")
    _check_labels(frame["label"], source, names["label"])
    check_texts(frame["text"], source, names["text"], cleaned)
    dup = frame["id"].duplicated(keep=False).to_numpy()
    if dup.any():
        rows = _rows(dup)
        raise InputError(
            f"{source}: id column {names['id']!r}: duplicated id {frame['id'].iloc[rows[0]]!r} "
            f"at rows {rows}; ids must be unique"
        )
    classes = frame["label"].unique()
    if len(classes) < 2:
        raise InputError(
            f"{source}: label column {names['label']!r} holds a single class "
            f"{classes.tolist()}; expected at least two"
        )


def _label_kind(value) -> str:
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bool, np.bool_, int, float, np.number)):
        return "number"
    return type(value).__name__


def _check_labels(labels: pd.Series, source: str, column: str) -> None:
    """Missing or blank labels, a mix of value types, spellings differing by case or spaces."""
    missing = labels.isna().to_numpy()
    if missing.any():
        raise InputError(
            f"{source}: label column {column!r} has missing (NaN) values at rows {_rows(missing)}; "
            "expected a label in every row"
        )
    blank = labels.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy()
    if blank.any():
        raise InputError(
            f"{source}: label column {column!r} has empty or whitespace-only values at rows "
            f"{_rows(blank)}; expected a class name in every row"
        )
    kinds = labels.map(_label_kind)
    if kinds.nunique() > 1 or not kinds.isin(["str", "number"]).all():
        found = ", ".join(
            f"{type(labels.iloc[i]).__name__} ({labels.iloc[i]!r} at row {i})"
            for i in np.flatnonzero(~kinds.duplicated().to_numpy())
        )
        raise InputError(
            f"{source}: label column {column!r} mixes value types: {found}; expected all "
            "strings or all integers"
        )
    if kinds.iloc[0] == "str":
        _check_spellings(labels, source, column)


def _check_spellings(labels: pd.Series, source: str, column: str) -> None:
    """Labels equal after stripping spaces and case folding must be spelt the same."""
    spellings = labels.groupby(labels.str.strip().str.casefold().to_numpy(), sort=True).unique()
    clashes = [list(values) for values in spellings if len(values) > 1]
    if clashes:
        values = clashes[0]
        more = f" (and {len(clashes) - 1} more such group(s))" if len(clashes) > 1 else ""
        raise InputError(
            f"{source}: label column {column!r} holds values differing only by case or "
            f"surrounding spaces: {', '.join(repr(v) for v in values)}{more} at rows "
            f"{_rows(labels.isin(values))}; expected one spelling per class"
        )


def encode_labels(labels: pd.Series, column: str = "label") -> tuple[np.ndarray, list[str]]:
    """Map string or integer labels to 0..K-1 (sorted order); return codes and class names
    (`column`: the source's label column, for messages)."""
    values = labels.to_numpy()
    numeric = pd.api.types.is_numeric_dtype(labels)
    if numeric:
        as_int = values.astype(np.int64)
        differs = as_int != values
        if differs.any():
            row = int(np.flatnonzero(differs)[0])
            raise InputError(
                f"label column {column!r} holds non-integer numbers (e.g. {values[row]} at row "
                f"{row}); expected integers or strings"
            )
        values = as_int
    classes = np.unique(values)
    codes = np.searchsorted(classes, values).astype(np.int64)
    return codes, [str(c) for c in classes]


def split_rows(
    labels: np.ndarray, val: float, test: float, seed: int, names: list[str] | None = None
) -> np.ndarray:
    """Stratified shuffle split: each class cut into train/val/test by the fractions (`names`:
    the class names, for messages)."""
    rng = np.random.default_rng(seed)
    split = np.empty(len(labels), dtype=object)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val, n_test = round(val * len(idx)), round(test * len(idx))
        n_train = len(idx) - n_val - n_test
        if n_val < 1 or n_train < 1 or (test > 0 and n_test < 1):
            name = repr(names[cls]) if names is not None else cls
            raise InputError(
                f"class {name} has {len(idx)} rows: too few for data.split (val={val}, "
                f"test={test}); every split needs at least one row of every class"
            )
        split[idx[:n_train]] = "train"
        split[idx[n_train : n_train + n_val]] = "val"
        split[idx[n_train + n_val :]] = "test"
    return split


def subsample(frame: pd.DataFrame, n_per_class: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keep = []
    for cls in sorted(frame["label"].unique(), key=str):
        idx = np.flatnonzero((frame["label"] == cls).to_numpy())
        if len(idx) < n_per_class:
            log.warning(
                "class %r has %d rows, fewer than data.n_per_class=%d: keeping all",
                cls,
                len(idx),
                n_per_class,
            )
        keep.append(np.sort(rng.choice(idx, size=min(n_per_class, len(idx)), replace=False)))
    return frame.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)


def _column_names(settings: DataSettings) -> dict:
    """The source's own column names (tables and `hf:`), for messages."""
    source = settings.source
    if source == "synthetic" or Path(source).is_dir() or source.endswith((".tar.gz", ".tgz")):
        return {}
    return {"text": settings.text_column, "label": settings.label_column, "id": settings.id_column}


def load_checked(settings: DataSettings) -> pd.DataFrame:
    """The source's rows, texts HTML-cleaned when asked, checked, subsampled when asked."""
    frame = load_source(
        settings.source,
        settings.text_column,
        settings.label_column,
        settings.id_column,
        dataclasses.asdict(settings.synthetic),
    )
    if settings.clean_html:  # before the checks: a text of only `<br />` is empty
        frame["text"] = frame["text"].map(clean_text)
    validate_rows(frame, settings.source, _column_names(settings), settings.clean_html)
    if settings.n_per_class:
        frame = subsample(frame, settings.n_per_class, settings.split.seed)
    return frame


def prepare_dataset(out: str | Path, settings: DataSettings) -> pd.DataFrame:
    """Load, clean, check, subsample, encode labels, split (stratified, seeded), write Parquet."""
    source, clean_html, n_per_class = settings.source, settings.clean_html, settings.n_per_class
    val, test, seed = settings.split.val, settings.split.test, settings.split.seed
    frame = load_checked(settings)
    try:
        codes, names = encode_labels(frame["label"], _column_names(settings).get("label", "label"))
        split = split_rows(codes, val, test, seed, names)
    except InputError as err:
        raise InputError(f"{source}: {err}") from err
    order = np.random.default_rng(seed).permutation(len(frame))  # pool and shuffle, as the paper
    data = pd.DataFrame(
        {
            "id": frame["id"].astype(str).to_numpy()[order],
            "text": frame["text"].astype(str).to_numpy()[order],
            "label": codes[order],
            "split": split[order].astype(str),
        }
    )
    meta = {
        "source": source,
        "synthetic": source == "synthetic",
        "label_names": names,
        "clean_html": clean_html,
        "n_per_class": n_per_class,
        "split": {"val": val, "test": test, "seed": seed},
        "counts": {s: int((data["split"] == s).sum()) for s in SPLITS},
    }
    write_dataset(data, meta, out)
    log.info("wrote %s: %d rows, classes %s, %s", out, len(data), names, meta["counts"])
    return data
