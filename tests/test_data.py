import subprocess
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest

from textvision.cli import main
from textvision.data import prepare_dataset, split_rows
from textvision.dataset import read_dataset
from textvision.errors import InputError
from textvision.settings import DataSettings
from textvision.synthetic import make_corpus


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
