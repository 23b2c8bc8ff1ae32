import subprocess
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest
from conftest import IMDB, needs_imdb

from textvision.cli import main
from textvision.config.settings import DataSettings
from textvision.core.errors import ConfigError, InputError
from textvision.data.prepare import prepare_dataset, split_rows
from textvision.data.store import read_dataset
from textvision.data.synthetic import make_corpus
from textvision.data.tables import clean_texts


def frame(n=20, labels=("neg", "pos")):
    return pd.DataFrame(
        {
            "review": [f"text number {i} <br />with a break" for i in range(n)],
            "sentiment": [labels[i % len(labels)] for i in range(n)],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_table_sources_with_configurable_columns(tmp_path, suffix):
    src = tmp_path / f"reviews{suffix}"
    data = frame(30, ("bad", "good", "meh"))
    {
        ".csv": lambda: data.to_csv(src, index=False),
        ".tsv": lambda: data.to_csv(src, sep="\t", index=False),
        ".parquet": lambda: data.to_parquet(src),
        ".jsonl": lambda: data.to_json(src, orient="records", lines=True),
    }[suffix]()
    out = tmp_path / "dataset.parquet"
    prepare_dataset(
        out,
        DataSettings.make(
            source=str(src), text_column="review", label_column="sentiment", split={"val": 0.2}
        ),
    )
    ds, meta = read_dataset(out)
    assert meta["label_names"] == ["bad", "good", "meh"]
    assert sorted(ds["label"].unique()) == [0, 1, 2]
    assert set(ds.columns) >= {"id", "text", "label", "split"}
    assert not ds["text"].str.contains("<br").any() and meta["clean_html"] is True
    assert meta["synthetic"] is False


def test_integer_labels_and_html_kept_when_asked(tmp_path):
    src = tmp_path / "r.csv"
    pd.DataFrame({"text": [f"t{i}<br/>x" for i in range(20)], "label": [3, 7] * 10}).to_csv(src)
    prepare_dataset(tmp_path / "d.parquet", DataSettings.make(source=str(src), clean_html=False))
    ds, meta = read_dataset(tmp_path / "d.parquet")
    assert meta["label_names"] == ["3", "7"] and meta["clean_html"] is False
    assert ds["text"].str.contains("<br/>").all()


def test_html_cleaning_is_one_function_for_tables_lists_and_its_off_switch():
    series = pd.Series(["a<br />b", "<BR>c  d ", 3])
    assert clean_texts(series, clean_html=True).tolist() == ["a b", "c d", 3]
    assert clean_texts(["x<br/>y"], clean_html=True) == ["x y"]
    texts = ["x<br/>y"]
    assert clean_texts(texts, clean_html=False) is texts
    assert clean_texts(series, clean_html=False) is series


def _write_aclimdb(root):
    for split in ("train", "test"):
        for label, rating in (("pos", 9), ("neg", 2)):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(5):
                (folder / f"{i}_{rating}.txt").write_text(f"{label} review {i} of {split}")


def test_aclimdb_folder_and_tarball(tmp_path):
    _write_aclimdb(tmp_path)
    (tmp_path / "aclImdb" / "README").write_text("not a review")
    prepare_dataset(tmp_path / "a.parquet", DataSettings.make(source=str(tmp_path / "aclImdb")))
    tarball = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "aclImdb", arcname="aclImdb")
    prepare_dataset(tmp_path / "b.parquet", DataSettings.make(source=str(tarball)))
    a, meta = read_dataset(tmp_path / "a.parquet")
    b, _ = read_dataset(tmp_path / "b.parquet")
    assert len(a) == 20 and meta["label_names"] == ["neg", "pos"]
    pd.testing.assert_frame_equal(a, b)
    assert (a["text"].str.startswith("pos") == (a["label"] == 1)).all()


def test_synthetic_corpus_is_labelled_deterministic_and_noisy(tmp_path):
    prepare_dataset(tmp_path / "s1.parquet", DataSettings.make(synthetic={"n_per_class": 50}))
    prepare_dataset(tmp_path / "s2.parquet", DataSettings.make(synthetic={"n_per_class": 50}))
    assert (tmp_path / "s1.parquet").read_bytes() == (tmp_path / "s2.parquet").read_bytes()
    ds, meta = read_dataset(tmp_path / "s1.parquet")
    assert meta["synthetic"] is True and ds["id"].str.startswith("synthetic").all()
    corpus = make_corpus(n_per_class=200, n_classes=2, label_noise=0.1, seed=3)
    clean = make_corpus(n_per_class=200, n_classes=2, label_noise=0.0, seed=3)
    assert 0 < (corpus["label"] != clean["label"]).mean() < 0.2
    assert (
        make_corpus(n_per_class=10, n_classes=3, label_noise=0.08, seed=0)["label"].nunique() == 3
    )


def test_split_is_stratified_seeded_and_complete():
    labels = np.repeat([0, 1, 2], [100, 60, 40])
    a = split_rows(labels, 0.2, 0.1, seed=5)
    assert (a == split_rows(labels, 0.2, 0.1, seed=5)).all()
    assert not (a == split_rows(labels, 0.2, 0.1, seed=6)).all()
    for cls, n in zip([0, 1, 2], [100, 60, 40], strict=True):
        sel = labels == cls
        assert (a[sel] == "val").sum() == round(0.2 * n)
        assert (a[sel] == "test").sum() == round(0.1 * n)
    with pytest.raises(InputError, match="too few"):
        split_rows(np.array([0, 0, 1, 1]), 0.2, 0.0, seed=0)


def test_n_per_class_subsamples_before_splitting(tmp_path):
    src = tmp_path / "r.csv"
    frame(100).to_csv(src, index=False)
    prepare_dataset(
        tmp_path / "d.parquet",
        DataSettings.make(
            source=str(src), text_column="review", label_column="sentiment", n_per_class=10
        ),
    )
    ds, meta = read_dataset(tmp_path / "d.parquet")
    assert len(ds) == 20 and meta["counts"] == {"train": 16, "val": 4, "test": 0}


def test_hf_source_offline_without_cache_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(InputError, match="hf:nobody/no-such-dataset.*prefetch"):
        prepare_dataset(
            tmp_path / "d.parquet", DataSettings.make(source="hf:nobody/no-such-dataset")
        )
    assert not (tmp_path / "d.parquet").exists()


BAD_INPUTS = {
    "empty file": (b"", "file is empty"),
    "header only": (b"text,label\n", "no data rows"),
    "missing text column": (b"body,label\na,0\nb,1\n", "missing text column 'text'"),
    "missing label column": (b"text,stars\na,0\nb,1\n", "missing label column 'label'"),
    "empty text": (b"text,label\na,0\n   ,1\nc,1\nd,0\n", "empty, whitespace-only"),
    "one class": (b"text,label\na,0\nb,0\nc,0\n", "single class"),
    "NaN labels": (b"text,label\na,0\nb,\nc,1\n", "missing (NaN) values at rows [1]"),
    "undecodable bytes": (b"text,label\na,0\n\xff\xfe bad,1\n", "line 3"),
    "duplicated id": (b"id,text,label\nx,a,0\ny,b,1\nx,c,1\n", "duplicated id 'x'"),
    "too small for the split": (b"text,label\na,0\nb,1\n", "too few"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_the_problem_and_writes_nothing(tmp_path, capsys, case):
    content, message = BAD_INPUTS[case]
    src = tmp_path / "bad.csv"
    src.write_bytes(content)
    out = tmp_path / "data" / "dataset.parquet"
    args = ["prepare-data", "--set", f"source={src}", "--out", str(out)]
    if case == "duplicated id":
        args += ["--set", "id_column=id"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and str(src) in err
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary left either


def test_cli_exit_status_is_nonzero(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "textvision.cli",
            "prepare-data",
            "--set",
            f"source={tmp_path / 'absent.csv'}",
            "--out",
            str(tmp_path / "o.parquet"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "absent.csv: file or folder not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dataset_reader_rejects_foreign_parquet(tmp_path):
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(InputError, match="not a textvision dataset"):
        read_dataset(tmp_path / "x.parquet")


def official_frame(n_train=40, n_test=20, labels=("neg", "pos")):
    """A table with its own split column (values in mixed case and spacing)."""
    n = n_train + n_test
    return pd.DataFrame(
        {
            "uid": [f"u{i}" for i in range(n)],
            "review": [f"review {i}" for i in range(n)],
            "sentiment": [labels[i % len(labels)] for i in range(n)],
            "part": [" Train" if i % 2 else "train" for i in range(n_train)]
            + ["TEST " if i % 2 else "test" for i in range(n_test)],
        }
    )


def official_settings(src, **values):
    return DataSettings.make(
        source=str(src),
        text_column="review",
        label_column="sentiment",
        id_column="uid",
        **{"split": {"column": "part", "val": 0.25}, **values},
    )


def test_split_column_keeps_test_rows_apart_and_cuts_val_from_train(tmp_path):
    src = tmp_path / "r.csv"
    table = official_frame(80, 40, ("bad", "good", "meh", "okay"))
    table.to_csv(src, index=False)
    prepare_dataset(tmp_path / "d.parquet", official_settings(src))
    ds, meta = read_dataset(tmp_path / "d.parquet")
    official = dict(zip(table["uid"], table["part"].str.strip().str.lower(), strict=True))
    source_split = ds["id"].map(official)
    assert set(ds.loc[ds["split"] == "test", "id"]) == {
        u for u, s in official.items() if s == "test"
    }
    assert (source_split[ds["split"].isin(["train", "val"])] == "train").all()
    assert meta["split"]["column"] == "part"
    assert meta["counts"] == {"train": 60, "val": 20, "test": 40}
    per_class = ds.groupby(["split", "label"]).size().unstack()
    assert (per_class.loc["val"] == 5).all() and (per_class.loc["train"] == 15).all()
    assert (per_class.loc["test"] == 10).all()
    prepare_dataset(tmp_path / "e.parquet", official_settings(src))
    assert (tmp_path / "d.parquet").read_bytes() == (tmp_path / "e.parquet").read_bytes()


def test_split_column_accepts_the_sources_own_validation_rows(tmp_path):
    src = tmp_path / "r.parquet"
    table = official_frame(40, 20)
    table.loc[:9, "part"] = [" Validation", "VAL"] * 5
    table.to_parquet(src)
    prepare_dataset(tmp_path / "d.parquet", official_settings(src))
    ds, _ = read_dataset(tmp_path / "d.parquet")
    assert set(ds.loc[ds["split"] == "val", "id"]) == {f"u{i}" for i in range(10)}
    assert set(ds.loc[ds["split"] == "test", "id"]) == {f"u{i}" for i in range(40, 60)}


def test_split_column_subsamples_each_split(tmp_path):
    src = tmp_path / "r.csv"
    table = official_frame(100, 60)
    table.to_csv(src, index=False)
    prepare_dataset(tmp_path / "d.parquet", official_settings(src, n_per_class=8))
    ds, meta = read_dataset(tmp_path / "d.parquet")
    assert meta["counts"] == {"train": 12, "val": 4, "test": 16}
    assert (ds[ds["split"] == "test"].groupby("label").size() == 8).all()
    assert (ds[ds["split"] != "test"].groupby("label").size() == 8).all()
    test_ids = set(table.loc[table["part"].str.strip().str.lower() == "test", "uid"])
    assert set(ds.loc[ds["split"] == "test", "id"]) <= test_ids
    assert not set(ds.loc[ds["split"] != "test", "id"]) & test_ids


def test_without_split_column_the_meta_says_null(tmp_path):
    src = tmp_path / "r.csv"
    frame(20).to_csv(src, index=False)
    prepare_dataset(
        tmp_path / "d.parquet",
        DataSettings.make(source=str(src), text_column="review", label_column="sentiment"),
    )
    _, meta = read_dataset(tmp_path / "d.parquet")
    assert meta["split"] == {"val": 0.2, "test": 0.0, "seed": 42, "column": None}


def test_split_column_refuses_unknown_values_with_rows(tmp_path):
    src = tmp_path / "r.csv"
    table = official_frame(20, 10)
    table.loc[[3, 7], "part"] = ["dev", "holdout"]
    table.to_csv(src, index=False)
    with pytest.raises(InputError) as err:
        prepare_dataset(tmp_path / "d.parquet", official_settings(src))
    message = str(err.value)
    assert str(src) in message and "'part'" in message and "data.split.column" in message
    assert "'dev', 'holdout'" in message and "rows [3, 7]" in message
    assert "expected 'train' or 'test'" in message
    assert not (tmp_path / "d.parquet").exists()


def test_split_column_missing_names_the_key_and_the_columns(tmp_path):
    src = tmp_path / "r.csv"
    official_frame(20, 10).to_csv(src, index=False)
    with pytest.raises(InputError) as err:
        prepare_dataset(tmp_path / "d.parquet", official_settings(src, split={"column": "fold"}))
    message = str(err.value)
    assert "missing split column 'fold'" in message and "data.split.column" in message
    assert "['uid', 'review', 'sentiment', 'part']" in message


def test_split_column_with_a_test_fraction_is_refused(tmp_path):
    src = tmp_path / "r.csv"
    official_frame(20, 10).to_csv(src, index=False)
    with pytest.raises(ConfigError, match=r"data\.split\.column.*data\.split\.test"):
        prepare_dataset(
            tmp_path / "d.parquet", official_settings(src, split={"column": "part", "test": 0.1})
        )


def test_split_column_refuses_a_split_lacking_a_class(tmp_path):
    src = tmp_path / "r.csv"
    table = official_frame(20, 10)
    table.loc[table["part"].str.strip().str.lower() == "test", "sentiment"] = "neg"
    table.to_csv(src, index=False)
    with pytest.raises(InputError, match=r"'test' rows hold no row of class\(es\) \['pos'\]"):
        prepare_dataset(tmp_path / "d.parquet", official_settings(src))


def test_split_column_for_aclimdb_and_synthetic(tmp_path):
    _write_aclimdb(tmp_path)
    source = str(tmp_path / "aclImdb")
    out = tmp_path / "a.parquet"
    prepare_dataset(out, DataSettings.make(source=source, split={"column": "split", "val": 0.2}))
    ds, meta = read_dataset(out)
    assert meta["split"]["column"] == "split"
    assert (ds["id"].str.startswith("test/") == (ds["split"] == "test")).all()
    assert meta["counts"] == {"train": 8, "val": 2, "test": 10}
    with pytest.raises(ConfigError, match="expected 'split'"):
        prepare_dataset(out, DataSettings.make(source=source, split={"column": "part"}))
    with pytest.raises(ConfigError, match="synthetic corpus has no split"):
        prepare_dataset(out, DataSettings.make(split={"column": "split"}))


@needs_imdb
def test_imdb_official_split_keeps_the_test_reviews(tmp_path):
    out = tmp_path / "imdb.parquet"
    settings = DataSettings.make(
        source=str(IMDB), n_per_class=50, clean_html=False, split={"column": "split"}
    )
    prepare_dataset(out, settings)
    ds, meta = read_dataset(out)
    source = pd.read_parquet(IMDB, columns=["split"])
    official = {f"row-{i}": s for i, s in enumerate(source["split"])}
    assert meta["split"]["column"] == "split"
    assert meta["counts"] == {"train": 80, "val": 20, "test": 100}
    test_ids = ds.loc[ds["split"] == "test", "id"]
    assert (test_ids.map(official) == "test").all()
    assert (ds.loc[ds["split"] != "test", "id"].map(official) == "train").all()


def test_texts_spelling_a_missing_value_are_read_as_texts(tmp_path):
    """`NA`, `null`, `None` in a CSV are texts (or labels) as written: only an empty cell is
    missing (pandas would read them all as missing)."""
    from textvision.data.tables import load_table

    path = tmp_path / "t.csv"
    path.write_text('text,label\nNA,pos\nnull,neg\nNone,pos\n"",neg\n')
    frame = load_table(path)
    assert frame["text"].tolist()[:3] == ["NA", "null", "None"]
    assert frame["text"].isna().tolist() == [False, False, False, True]


def test_boolean_labels_keep_their_names():
    import pandas as pd

    from textvision.data.prepare import encode_labels

    codes, names = encode_labels(pd.Series([True, False, True]))
    assert names == ["False", "True"] and codes.tolist() == [1, 0, 1]
