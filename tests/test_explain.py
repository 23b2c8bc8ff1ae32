"""Explanations of a bundle's predictions: the differentiable path is the bundle, DeepInsight's
averaging is a linear map, integrated gradients add up to the score difference (the words
they single out: test_explain_words.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ENV, made_once, planned_jobs, write_config

from textvision.cli import main
from textvision.deepinsight.functional import SCALERS, apply_scaler, averaging_map
from textvision.deepinsight.transformer import DeepInsightTransformer
from textvision.explain.attribution import (
    COMPLETENESS_TOLERANCE,
    DifferentiablePath,
    PixelAveraging,
    baseline_embeddings,
    feature_attributions,
    integrated_gradients,
    reference_tokens,
    torch_scaler,
    word_attributions,
)
from textvision.explain.step import page_names, sample_rows

slow = pytest.mark.slow


# -- DeepInsight's averaging as a fixed linear map ---------------------------------------------
@pytest.mark.parametrize("discretization", ["bin", "assignment"])
@pytest.mark.parametrize("scaler", SCALERS)
def test_the_averaging_map_is_deepinsight_transform(scaler, discretization):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(40, 60)) * rng.uniform(0.1, 3, 60)).astype(np.float32)
    transformer = DeepInsightTransformer(
        pixels=6,
        scaler=scaler,
        projector="pca",
        discretization=discretization,
        empty_value=-0.5,
    ).fit(X[:30])  # the last rows are unseen: the log scaler clips some of them
    counts = transformer.feature_counts_
    assert counts.max() > 1 and (discretization == "assignment" or (counts == 0).any())
    images = transformer.transform(X).reshape(len(X), -1)
    matrix, empty = averaging_map(transformer.pixels_, transformer.pixels, transformer.empty_value)
    scaled = apply_scaler(X, scaler, transformer.scale_)
    assert np.abs((matrix @ scaled.T).T + empty - images).max() < 1e-5
    with torch.no_grad():
        torch_images = PixelAveraging(transformer)(
            torch_scaler(scaler, transformer.scale_)(torch.from_numpy(X))
        )
    assert np.abs(torch_images.numpy().reshape(len(X), -1) - images).max() < 1e-5


def test_the_sample_is_balanced_over_classes_with_right_and_wrong_predictions():
    labels = np.repeat([0, 1], 10)
    predicted = labels.copy()
    predicted[[0, 1]] = 1  # class 0: two wrong, eight right; class 1: all right
    picked = sample_rows(labels, predicted, 8, seed=3)
    assert len(set(picked)) == 8
    assert (labels[picked] == 0).sum() == 4 and (labels[picked] == 1).sum() == 4
    zero = picked[labels[picked] == 0]
    assert (predicted[zero] != 0).sum() == 2  # both wrong ones, in turn with right ones
    assert picked.tolist() == sample_rows(labels, predicted, 8, seed=3).tolist()
    assert picked.tolist() != sample_rows(labels, predicted, 8, seed=4).tolist()
    assert sorted(sample_rows(labels, predicted, 50, seed=0)) == list(range(20))


def test_page_names_are_safe_file_names_and_unique():
    assert page_names(["a/b", "a?b", "index", "features", ".x", "", "A/B"]) == [
        "a_b",
        "a_b-2",
        "index_",
        "features_",
        "x",
        "text",
        "A_B-3",
    ]


# -- a run that learned: synthetic reviews -> MiniLM -> DeepInsight -> AlexNet, and logreg -----
# Its settings were chosen for a CNN that learns the sentiment in a few epochs on two CPU cores:
# the MiniLM's second layer (lexical; 2 of 6 encoder layers to differentiate through), z-scored
# features assigned one or two per pixel, no label noise.
N_PER_CLASS = 400


def _step(*args: str) -> None:
    """One `textvision` step in a process of its own, as the workflow runs it: what earlier
    tests did to this interpreter (threads, caches) cannot change the trained models."""
    proc = subprocess.run(["textvision", *args], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _learn(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    ds, emb, mapping = (str(root / n) for n in ("dataset.parquet", "emb.h5", "mapping.h5"))
    synthetic = {"n_per_class": N_PER_CLASS, "label_noise": 0.0, "seed": 3}
    split = {"val": 0.25, "test": 0.0, "seed": 1}
    _step(
        "prepare-data",
        "--out",
        ds,
        "--settings",
        json.dumps({"data": {"synthetic": synthetic, "split": split}}),
    )
    _step(
        "embed",
        "--dataset",
        ds,
        "--out",
        str(root / "shard.h5"),
        "--settings",
        json.dumps({"embedding": {"layers": [2], "max_length": 64, "batch_size": 32}}),
    )
    _step("merge-embeddings", "--dataset", ds, "--out", emb, str(root / "shard.h5"))
    deepinsight = {
        "pixels": 16,
        "scaler": "zscore",
        "discretization": "assignment",
        "tsne": {"perplexity": 5, "max_iter": 250},
    }
    _step(
        "fit-mapping",
        "--embeddings",
        emb,
        "--out",
        mapping,
        "--settings",
        json.dumps({"deepinsight": deepinsight}),
    )
    _step(
        "render-images", "--embeddings", emb, "--mapping", mapping, "--out", str(root / "images.h5")
    )
    training = {
        "weights": "none",
        "epochs": 8,
        "batch_size": 16,
        "upsample": 3,
        "lr": {"alexnet": {"head": 3e-4, "classifier": 3e-4}},
        "normalization": "train",
    }
    _step(
        "train",
        "--images",
        str(root / "images.h5"),
        "--outdir",
        str(root / "alexnet"),
        "--backbone",
        "alexnet",
        "--seed",
        "0",
        "--mapping",
        mapping,
        "--settings",
        json.dumps({"training": training, "device": "cpu"}),
    )
    _step("baseline", "--embeddings", emb, "--out", str(root / "logreg" / "metrics.json"))
    cnn, logreg = (
        json.loads((root / m / "metrics.json").read_text()) for m in ("alexnet", "logreg")
    )
    assert cnn["val_accuracy_best"] >= 0.75 and logreg["val_accuracy_best"] >= 0.9


def learned_run(tmp_path_factory) -> dict:
    """The run, made once per test session (test_explain_words.py reads it too): its folder,
    the two bundles, the validation rows."""
    root = made_once(tmp_path_factory, "learned", _learn)
    frame = pd.read_parquet(root / "dataset.parquet")
    return {
        "root": root,
        "alexnet": root / "alexnet" / "bundle",
        "logreg": root / "logreg" / "bundle",
        "val": frame[frame["split"] == "val"].reset_index(drop=True),
    }


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    return learned_run(tmp_path_factory)


def explainer(learned, model, **kw) -> DifferentiablePath:
    from textvision.bundle.model import load_bundle

    return DifferentiablePath(load_bundle(learned[model], **kw))


@slow
@pytest.mark.parametrize("model", ["alexnet", "logreg"])
def test_the_differentiable_path_gives_the_bundles_probabilities(learned, model):
    from textvision.core.threads import limit_threads

    texts = learned["val"]["text"].tolist()[:24]
    # like with like: one text per batch on one thread, as `embed` computes a batch on a CPU (a
    # batch of several texts or several threads round otherwise, which the image model amplifies)
    path = explainer(learned, model, batch_size=1)
    with limit_threads(1):
        assert np.abs(path.predict_proba(texts) - path.bundle.predict_proba(texts)).max() < 1e-5


@slow
def test_a_bundle_of_int8_embeddings_is_explained_through_float32(learned, tmp_path):
    """int8 products have no gradients: the path runs a float32 copy of the encoder (the same
    probabilities as the bundle in float32), and the attributions add up."""
    from textvision.bundle.model import load_bundle
    from textvision.bundle.store import META, sealed
    from textvision.core.threads import limit_threads
    from textvision.embed.int8 import Int8Linear

    bundle = shutil.copytree(learned["logreg"], tmp_path / "int8")
    meta = json.loads((bundle / META).read_text())
    meta["encoder"]["precision"] = "int8"
    (bundle / META).write_text(json.dumps(sealed(meta)))  # a bundle made in int8
    loaded = load_bundle(bundle, batch_size=1)
    assert isinstance(loaded.encoder.encoder.layer[0].intermediate.dense, Int8Linear)
    path = DifferentiablePath(loaded)
    texts = learned["val"]["text"].tolist()[:8]
    with limit_threads(1):
        exact = load_bundle(learned["logreg"], batch_size=1).predict_proba(texts)
        assert np.abs(path.predict_proba(texts) - exact).max() < 1e-5
    result = integrated_gradients(path, texts[0])
    assert result.completeness_error < COMPLETENESS_TOLERANCE
    assert np.abs(result.attributions).sum() > 0


def path_scale(path, result) -> float:
    """The largest change of the explained score along the path from the `[PAD]` baseline to
    the text (33 points): the scale an integral over the path errs on."""
    from textvision.explain.attribution import baseline_embeddings

    x = path.embed_tokens(result.tokens.ids)
    base = baseline_embeddings(path, result.tokens)
    with torch.no_grad():
        points = torch.stack([base + a * (x - base) for a in torch.linspace(0, 1, 33)])
        scores = torch.stack([path.logits(p[None])[0, result.target] for p in points])
    return float(scores.max() - scores.min())


@slow
@pytest.mark.parametrize("model", ["alexnet", "logreg"])
def test_integrated_gradients_add_up_to_the_score_difference(learned, model):
    """The linear model's path is smooth: its attributions add up within the tolerance of the
    score difference. The image model's path can swing far beyond the difference of its ends
    (on an AMD EPYC with AVX-512 VP2INTERSECT, to 100 and back for an end-to-end difference
    of 0.95, while the same point scored in batches of another size moves by up to 0.06): its
    attributions add up within the tolerance of that swing, the scale the integral errs on."""
    path = explainer(learned, model)
    for text in learned["val"]["text"][:3]:
        result = integrated_gradients(path, text)  # the default steps
        if model == "logreg":
            assert result.completeness_error < COMPLETENESS_TOLERANCE
        else:
            gap = abs(result.attributions.sum() - (result.score - result.baseline_score))
            assert gap < COMPLETENESS_TOLERANCE * path_scale(path, result)
        assert result.attributions[result.tokens.special].tolist() == [0, 0]  # [CLS], [SEP]
        words = word_attributions(result)
        assert words["attribution"].sum() == pytest.approx(result.attributions.sum())
        assert [text[s:e] for s, e in zip(words["start"], words["end"], strict=True)] == (
            words["word"].tolist()
        )
        seen = "".join(words["word"])  # every word, in order (a prefix if truncated)
        assert text.replace(" ", "").startswith(seen) and len(seen) > 0.5 * len(text)


@slow
def test_reference_baselines_are_averaged_and_keep_the_texts_frame(learned):
    path = explainer(learned, "alexnet")
    text, *others = learned["val"]["text"][:3].tolist()
    tokens = path.tokenize(text)
    short, long = reference_tokens(path, ["awful", " ".join(others * 20)])
    pad = path.embed_tokens([path.tokenizer.pad_token_id])[0]
    base = baseline_embeddings(path, tokens, short)
    special = torch.as_tensor(tokens.special)
    assert torch.equal(base[special], path.embed_tokens(tokens.ids)[special])
    assert torch.equal(base[1], path.embed_tokens(short)[0]) and torch.equal(base[2], pad)
    content = int((~tokens.special).sum())
    assert len(long) >= content  # as long as the text, or cut to its length
    cut = baseline_embeddings(path, tokens, long)[1:-1]
    assert torch.equal(cut, path.embed_tokens(long[:content]))
    one, two = (
        integrated_gradients(path, text, steps=8, refine=0, references=[r]) for r in (short, long)
    )
    both = integrated_gradients(path, text, steps=8, refine=0, references=[short, long])
    assert both.baselines == 2 and one.baselines == 1
    # one batch of both references and two separate passes round differently in float32
    assert both.baseline_score == pytest.approx(
        (one.baseline_score + two.baseline_score) / 2, rel=1e-5
    )
    assert np.allclose(both.attributions, (one.attributions + two.attributions) / 2, atol=1e-6)


@slow
def test_feature_attributions_add_up_per_pixel_and_name_layer_and_pixel(learned):
    from textvision.explain.figures import feature_table, layer_shares

    path = explainer(learned, "alexnet")
    bundle, val = path.bundle, learned["val"]
    result = feature_attributions(bundle, val["text"].tolist(), val["label"].to_numpy())
    assert result.counts.tolist() == np.bincount(val["label"], minlength=2).tolist()
    assert np.abs(result.proba - bundle.predict_proba(val["text"].tolist())).max() < 1e-4
    where = bundle.classifier.transformer.pixels_
    for k in range(2):  # a pixel's attribution is the sum of its features' (empty_value is 0)
        per_pixel = np.zeros_like(result.pixel_mean[k])
        np.add.at(per_pixel, (where[:, 0], where[:, 1]), result.mean[k])
        assert np.allclose(per_pixel, result.pixel_mean[k], atol=1e-6)
    table = feature_table(result, bundle.layers, where)
    assert table.columns.tolist()[:5] == ["feature", "layer", "dimension", "pixel_row", "pixel_col"]
    assert set(table["layer"]) == {2} and table["dimension"].max() == 383
    assert {"mean_negative", "mean_positive", "mean_abs_positive"} <= set(table.columns)
    assert np.allclose(layer_shares(table).sum(), 1.0)


# -- the command line --------------------------------------------------------------------------
def explain(model, out, *args) -> int:
    return main(["explain", "--model", str(model), "--out", str(out), "--device", "cpu", *args])


@slow
def test_explain_writes_a_page_and_a_table_per_text_and_an_index(learned, tmp_path):
    texts = tmp_path / "texts.csv"
    pd.DataFrame(
        {
            "review": ["I loved <b>this</b> film & the ending.", "The plot is dull, a waste."],
            "key": ["r/1", "r/1"],
        }
    ).to_csv(texts, index=False)
    out = tmp_path / "pages"
    args = ["--input", str(texts), "--text-column", "review", "--id-column", "key", "--steps", "8"]
    args += ["--references", "2", "--reference-dataset", str(learned["root"] / "dataset.parquet")]
    assert explain(learned["logreg"], out, *args, "--threads", "2") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "index.csv", "index.html", "r_1-2.csv", "r_1-2.html", "r_1.csv", "r_1.html",
    ]  # fmt: skip
    index = pd.read_csv(out / "index.csv")
    assert index["page"].tolist() == ["r_1", "r_1-2"] and index["top_words"].notna().all()
    assert index["baselines"].tolist() == [2, 2]
    table = pd.read_csv(out / "r_1.csv")
    assert table.columns.tolist() == [
        "word", "start", "end", "token_start", "token_end", "attribution",
    ]  # fmt: skip
    assert "loved" in table["word"].tolist() and table["token_start"].iloc[0] == 1
    page = (out / "r_1.html").read_text()
    assert "&lt;" in page and "&amp;" in page and ">this<" in page and "<b>this" not in page
    assert "Predicted: <b>positive</b>" in page and "rgba(220, 38, 38" in page
    assert "averaged over 2 baselines" in page
    index = (out / "index.html").read_text()
    assert 'href="r_1.html"' in index and 'href="r_1-2.csv"' in index
    assert not list(tmp_path.glob(".pages*"))  # no temporary left


@slow
def test_explain_a_runs_validation_texts_with_features_and_figures(learned, tmp_path):
    out = tmp_path / "explain" / "alexnet"
    dataset = learned["root"] / "dataset.parquet"
    out.mkdir(parents=True)
    (out / "stale.html").write_text("from an older run")  # the folder is replaced whole
    args = ["--dataset", str(dataset), "--n-texts", "3", "--steps", "4", "--seed", "1"]
    assert explain(learned["alexnet"], out, *args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "stale.html" not in names and len([n for n in names if n.endswith(".html")]) == 4
    for figure in ("attribution_map.png", "layer_attribution.png"):  # registry EXPLAIN_FIGURES
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"
    features = pd.read_csv(out / "features.csv")
    assert len(features) == 384 and features["pixel_row"].max() < 16
    index = (out / "index.html").read_text()
    assert index.count("<tr>") == 4 and "features.csv" in index and "label" in index


def refused(capsys, model, out, *args) -> str:
    assert explain(model, out, *args) == 1
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@slow
def test_refusals_leave_no_output(learned, tmp_path, capsys):
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["A fine film."]}).to_csv(texts, index=False)
    out = tmp_path / "pages"
    given = ["--input", str(texts), "--references", "0"]  # the [PAD] baseline: no dataset
    err = refused(capsys, learned["logreg"], out, *given, "--text-column", "review")
    assert "missing text column 'review'" in err
    err = refused(capsys, tmp_path, out, *given)
    assert "not a model bundle" in err
    err = refused(capsys, learned["logreg"], out, *given, "--steps", "0")
    assert "--steps 0" in err
    err = refused(capsys, learned["logreg"], out, "--input", str(texts))  # 8 references
    assert "--reference-dataset" in err


@slow
def test_snakemake_explain_target(tmp_path):
    write_config(tmp_path, {"explain": {"enabled": False, "models": []}})
    jobs = planned_jobs(tmp_path, "explain")
    assert {k: jobs.get(k) for k in ("explain_backbone", "explain_logreg", "explain")} == {
        "explain_backbone": 2,
        "explain_logreg": 1,
        "explain": 1,
    }
    only = planned_jobs(
        tmp_path, "explain", "--config", f"explain={json.dumps({'models': ['logreg']})}"
    )
    assert "explain_backbone" not in only and only["explain_logreg"] == 1
    assert "explain_backbone" not in planned_jobs(tmp_path)  # not part of `all`
    enabled = {"enabled": True, "models": ["alexnet"]}
    jobs = planned_jobs(tmp_path, "--config", f"explain={json.dumps(enabled)}")
    assert jobs["explain_backbone"] == 1 and "explain_logreg" not in jobs  # `all` and the report
