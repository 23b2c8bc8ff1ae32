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

from textvision.config.settings import DataSettings
from textvision.core.errors import ConfigError, InputError
from textvision.data.store import write_dataset
from textvision.data.synthetic import make_corpus
from textvision.data.tables import check_texts, clean_texts
from textvision.data.tables import load_table as _load_table
from textvision.data.tables import one_line as _one_line
from textvision.data.tables import rows as _rows

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_ACLIMDB = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
SOURCE_SPLIT = "source_split"  # load_source's column of each row's own split (`data.split.column`)
_SPLIT_VALUES = {"train": "train", "test": "test", "val": "val", "validation": "val"}


def load_source(
    source: str,
    text_column: str,
    label_column: str,
    id_column: str | None,
    synthetic: dict,
    split_column: str | None = None,
) -> pd.DataFrame:
    """Read a labelled source into columns id, text, label (raw label values), and with
    `split_column` (`data.split.column`) a column `SOURCE_SPLIT` of each row's own split as
    written in the source (a table's named column; `hf:` split names and `aclImdb` folders,
    for which `split_column` must be `split`)."""
    if source == "synthetic":
        if split_column is not None:
            raise ConfigError(
                f"config key 'data.split.column': {split_column!r}, but the synthetic corpus has "
                "no split of its own; expected null (or a source with a train/test split)"
            )
        return make_corpus(**synthetic)
    hf = source.startswith("hf:")
    if (hf or _is_aclimdb(source)) and split_column not in (None, "split"):
        raise ConfigError(
            f"config key 'data.split.column': {split_column!r}; {source} has no columns to "
            "choose from: expected 'split' (its own train/test split) or null"
        )
    if hf:
        frame = _load_hf(source[3:], text_column, label_column)
        text_column, label_column = "text", "label"
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"{source}: file or folder not found")
        if _is_aclimdb(source):
            frame = _load_aclimdb(path)
            return frame if split_column is not None else frame.drop(columns=SOURCE_SPLIT)
        frame = _load_table(path)
    roles = [("text", text_column), ("label", label_column), ("id", id_column)]
    if not hf:
        roles.append(("split", split_column))
    for role, column in roles:
        if column is not None and column not in frame.columns:
            key = "data.split.column" if role == "split" else f"data.{role}_column"
            raise InputError(
                f"{source}: missing {role} column {column!r} (config key '{key}'); "
                f"found columns {list(frame.columns)}"
            )
    ids = frame[id_column].astype(str) if id_column else [f"row-{i}" for i in range(len(frame))]
    out = pd.DataFrame({"id": ids, "text": frame[text_column], "label": frame[label_column]})
    if split_column is not None:
        out[SOURCE_SPLIT] = frame[SOURCE_SPLIT if hf else split_column]
    return out


def _is_aclimdb(source: str) -> bool:
    """An `aclImdb` folder or tarball (any other path is a table)."""
    return Path(source).is_dir() or source.endswith((".tar.gz", ".tgz"))


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
            rows.append((f"{split}/{label}/{num}", text, label, split))

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
    return pd.DataFrame(rows, columns=["id", "text", "label", SOURCE_SPLIT])


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
        frames.append(frame.assign(**{SOURCE_SPLIT: split}))
    frame = pd.concat(frames)
    return pd.DataFrame(
        {
            "id": frame.index,
            "text": frame[text_column].values,
            "label": frame[label_column].values,
            SOURCE_SPLIT: frame[SOURCE_SPLIT].values,
        }
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
    # booleans keep their names (`False`, `True`), not the integers numpy would make of them
    numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
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
    """`n_per_class` rows of every class (all of a smaller class), seeded, in source order; with
    a `SOURCE_SPLIT` column (normalised), that many of every class in each split."""
    if SOURCE_SPLIT not in frame.columns:
        keep = _subsample_rows(frame["label"], n_per_class, seed)
    else:
        keep = np.sort(
            np.concatenate(
                [
                    idx[_subsample_rows(frame["label"].iloc[idx], n_per_class, seed, f" {name}")]
                    for name in SPLITS
                    if len(idx := np.flatnonzero((frame[SOURCE_SPLIT] == name).to_numpy()))
                ]
            )
        )
    return frame.iloc[keep].reset_index(drop=True)


def _subsample_rows(labels: pd.Series, n_per_class: int, seed: int, where: str = "") -> np.ndarray:
    """Positions of the kept rows, sorted (`where`: the split, for the warning)."""
    rng = np.random.default_rng(seed)
    keep = []
    for cls in sorted(labels.unique(), key=str):
        idx = np.flatnonzero((labels == cls).to_numpy())
        if len(idx) < n_per_class:
            log.warning(
                "class %r has %d%s rows, fewer than data.n_per_class=%d: keeping all",
                cls,
                len(idx),
                where,
                n_per_class,
            )
        keep.append(np.sort(rng.choice(idx, size=min(n_per_class, len(idx)), replace=False)))
    return np.sort(np.concatenate(keep))


def _column_names(settings: DataSettings) -> dict:
    """The source's own column names (tables and `hf:`), for messages."""
    source = settings.source
    if source == "synthetic" or _is_aclimdb(source):
        return {}
    return {"text": settings.text_column, "label": settings.label_column, "id": settings.id_column}


def normalise_splits(values: pd.Series, source: str, column: str) -> pd.Series:
    """The source's split values as `train`, `val` or `test` (any case, surrounding spaces
    ignored, `validation` = `val`); anything else stops, named with its rows."""
    keys = values.map(lambda v: v.strip().casefold() if isinstance(v, str) else v)
    splits = keys.map(_SPLIT_VALUES)
    bad = splits.isna().to_numpy()
    if bad.any():
        found = list(dict.fromkeys(values[bad].tolist()))
        shown = ", ".join(repr(v) for v in found[:5]) + (
            f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        )
        raise InputError(
            f"{source}: split column {column!r} (config key 'data.split.column') holds "
            f"unexpected values {shown} at rows {_rows(bad)}; expected 'train' or 'test' "
            "('val' or 'validation' for validation rows; any case)"
        )
    return splits.astype(object)


def _check_split_classes(frame: pd.DataFrame, source: str, column: str) -> None:
    """The source's train and test rows (and validation rows, if it has any) hold every class."""
    classes = sorted(frame["label"].unique(), key=str)
    for name in SPLITS:
        present = frame["label"][frame[SOURCE_SPLIT] == name].unique()
        if name == "val" and len(present) == 0:
            continue
        missing = [c for c in classes if c not in set(present)]
        if missing:
            raise InputError(
                f"{source}: split column {column!r} (config key 'data.split.column'): the "
                f"{name!r} rows hold no row of class(es) {missing} (of {classes}); expected "
                "every class in the train and test rows"
            )


def load_checked(settings: DataSettings) -> pd.DataFrame:
    """The source's rows, texts HTML-cleaned when asked, checked, subsampled when asked. With
    `data.split.column`, a column `SOURCE_SPLIT` holds each row's split (train, val, test)."""
    column = settings.split.column
    frame = load_source(
        settings.source,
        settings.text_column,
        settings.label_column,
        settings.id_column,
        dataclasses.asdict(settings.synthetic),
        column,
    )
    # before the checks: a text of only `<br />` is empty
    frame["text"] = clean_texts(frame["text"], settings.clean_html)
    validate_rows(frame, settings.source, _column_names(settings), settings.clean_html)
    if column is not None:
        frame[SOURCE_SPLIT] = normalise_splits(frame[SOURCE_SPLIT], settings.source, column)
        _check_split_classes(frame, settings.source, column)
    if settings.n_per_class:
        frame = subsample(frame, settings.n_per_class, settings.split.seed)
    return frame


def source_split_rows(
    source_split: np.ndarray, labels: np.ndarray, val: float, seed: int, names: list[str]
) -> np.ndarray:
    """The source's own split; validation rows cut from its train rows (stratified, seeded)
    unless it has validation rows of its own."""
    split = np.asarray(source_split, dtype=object).copy()
    if (split == "val").any():
        log.info("the source has its own validation rows: data.split.val unused")
        return split
    train = np.flatnonzero(split == "train")
    split[train] = split_rows(labels[train], val, 0.0, seed, names)
    return split


def prepare_dataset(out: str | Path, settings: DataSettings) -> pd.DataFrame:
    """Load, clean, check, subsample, encode labels, split (stratified, seeded; or the source's
    own train/test split with `data.split.column`), write Parquet."""
    source, clean_html, n_per_class = settings.source, settings.clean_html, settings.n_per_class
    val, test, seed = settings.split.val, settings.split.test, settings.split.seed
    column = settings.split.column
    frame = load_checked(settings)
    try:
        codes, names = encode_labels(frame["label"], _column_names(settings).get("label", "label"))
        if column is None:
            split = split_rows(codes, val, test, seed, names)
        else:
            split = source_split_rows(frame[SOURCE_SPLIT].to_numpy(), codes, val, seed, names)
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
        "split": {"val": val, "test": test, "seed": seed, "column": column},
        "counts": {s: int((data["split"] == s).sum()) for s in SPLITS},
    }
    write_dataset(data, meta, out)
    log.info("wrote %s: %d rows, classes %s, %s", out, len(data), names, meta["counts"])
    return data
