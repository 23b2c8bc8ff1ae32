"""One timed run in a fresh interpreter: `python -m bench.worker TASK '{json params}'`.

Prints `BENCH_RESULT {json}` as its last line: seconds of the timed section, peak RSS (VmHWM,
reset right before it) and peak RSS above the RSS at its start, plus task-specific values.
Loading models and inputs happens before the timed section, on both sides alike.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

from bench.common import MARK, Timed

TASKS = {}


def task(fn):
    TASKS[fn.__name__] = fn
    return fn


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# -- embedding ---------------------------------------------------------------------------------
EMBED_SETTINGS = {"max_length": 512, "batch_size": 32, "precision": "float32"}


@task
def embed_ref(p: dict) -> dict:
    """The original code's loop: one review at a time, tokenizer per text, fp32, 512 tokens,
    hidden states of all layers, `[CLS]` of the last six."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bench.common import imdb_texts
    from textvision.embed.encoder import resolve_model

    _threads(p["threads"])
    texts = imdb_texts(p["n"], Path(p["imdb"]))
    device = p.get("device", "cpu")
    folder = resolve_model(p["model"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, output_hidden_states=True, dtype=torch.float32)
    model.eval().to(device)
    out = []
    with Timed() as timer, torch.no_grad():
        for text in texts:
            encoded = tokenizer(text, truncation=True, max_length=512, return_tensors="pt")
            hidden = model(**encoded.to(device)).hidden_states
            out.append(torch.stack([h[0, 0] for h in hidden[-p["layers"] :]]).cpu().numpy())
    vectors = np.stack(out)
    if p.get("save"):
        np.save(p["save"], vectors)
    return {**timer.result(), "n": len(texts)}


@task
def embed_ours(p: dict) -> dict:
    """textvision.embed.step.embed_texts as the workflow calls it (batch 32, fp32, 512 tokens)."""
    from bench.common import imdb_texts
    from textvision.embed.encoder import embed_texts, layer_indices, load_encoder

    _threads(p["threads"])
    texts = imdb_texts(p["n"], Path(p["imdb"]))
    settings = {**EMBED_SETTINGS, "precision": p.get("precision", "float32")}
    tokenizer, model, _ = load_encoder(p["model"], p.get("device", "cpu"), settings["precision"])
    layers = layer_indices(p["layers"], model.config.num_hidden_layers)
    with Timed() as timer:
        vectors = embed_texts(texts, tokenizer, model, layers, **settings)
    if p.get("save"):
        np.save(p["save"], vectors)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
    return {**timer.result(), "n": len(texts), "lengths": lengths}


@task
def embed_file(p: dict) -> dict:
    """textvision.embed.step.embed_dataset + merge_shards of a dataset.parquet (the workflow's
    embedding step) in `p["precision"]`."""
    from textvision.config.settings import EmbedSettings, MergeSettings
    from textvision.embed.step import embed_dataset, merge_shards

    _threads(p["threads"])
    out = Path(p["out"])
    shard = out.with_suffix(".shard.h5")
    with Timed() as timer:
        settings = EmbedSettings.make(
            model=p["model"], layers=6, max_length=512, precision=p["precision"]
        )
        embed_dataset(p["dataset"], shard, settings)
        merge_shards([shard], p["dataset"], out, MergeSettings.make())
    shard.unlink()
    return timer.result()


@task
def embed_profile(p: dict) -> dict:
    """Share of self CPU time per operator while embedding (torch.profiler), ours, on one
    thread: with two, each of two worker threads runs the same operators (the profiler sees
    the calling thread only)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.common import imdb_texts
    from textvision.embed.encoder import embed_texts, layer_indices, load_encoder

    _threads(1)
    texts = imdb_texts(p["n"], Path(p["imdb"]))
    tokenizer, model, _ = load_encoder(p["model"], "cpu")
    layers = layer_indices(p["layers"], model.config.num_hidden_layers)
    embed_texts(texts[:4], tokenizer, model, layers, **EMBED_SETTINGS)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        embed_texts(texts, tokenizer, model, layers, **EMBED_SETTINGS)
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows)
    shares = {r.key: r.self_cpu_time_total / total for r in rows}
    assert torch.get_num_threads() == 1
    return {"shares": dict(sorted(shares.items(), key=lambda kv: -kv[1]))}


@task
def peak_matmul(p: dict) -> dict:
    """fp32 GFLOP/s of a large square matmul on these threads (best of several)."""
    import time

    import torch

    _threads(p["threads"])
    size = p.get("size", 4096)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(p.get("repeats", 5)):
        tic = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - tic) / 1e9)
    return {"gflops": best}


# -- DeepInsight fit ---------------------------------------------------------------------------
def _trustworthiness(points: np.ndarray, layout: np.ndarray, k: int) -> float:
    from sklearn.manifold import trustworthiness

    return float(trustworthiness(points, layout, n_neighbors=k, metric="cosine"))


def _log_scaled(path: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The raw rows and the log-scaled rows (textvision's log scaler; pyDeepInsight's
    Norm2Scaler gives the same array, checked in bench/README.md)."""
    from bench.common import read_matrix
    from textvision.deepinsight.functional import apply_scaler, fit_scaler

    X = read_matrix(Path(path), rows)
    return X, apply_scaler(X, "log", fit_scaler(X, "log"))


@task
def fit_ref(p: dict) -> dict:
    """pyDeepInsight ImageTransformer(feature_extractor=TSNE(metric="cosine"), pixels=50).fit on
    the log-scaled matrix."""
    from pyDeepInsight import ImageTransformer
    from sklearn.manifold import TSNE

    _threads(p["threads"])
    _, scaled = _log_scaled(p["embeddings"], p["rows"])
    tsne = TSNE(
        n_components=2,
        metric="cosine",
        perplexity=p["perplexity"],
        init="pca",
        learning_rate="auto",
        max_iter=p["max_iter"],
        random_state=0,
    )
    transformer = ImageTransformer(feature_extractor=tsne, pixels=p["pixels"])
    with Timed() as timer:
        transformer.fit(scaled)
    result = {
        **timer.result(),
        "pixels_used": int(len(np.unique(transformer.coords(), axis=0))),
        "iterations": int(tsne.n_iter_) + 1,
    }
    if p.get("quality") and p.get("run", 0) == 0:
        layout = tsne.embedding_
        result["trust"] = {k: _trustworthiness(scaled.T, layout, k) for k in p["quality"]}
    return result


@task
def fit_ours(p: dict) -> dict:
    """textvision DeepInsightTransformer(scaler="none", metric="cosine", backend=...).fit on the
    same log-scaled matrix; the mapping saved (run 0) carries the log scaler's statistics."""
    from textvision.deepinsight.functional import fit_scaler
    from textvision.deepinsight.transformer import DeepInsightTransformer

    _threads(p["threads"])
    X, scaled = _log_scaled(p["embeddings"], p["rows"])
    transformer = DeepInsightTransformer(
        pixels=p["pixels"],
        scaler="none",
        projector="tsne",
        perplexity=p["perplexity"],
        metric="cosine",
        init="pca",
        learning_rate="auto",
        max_iter=p["max_iter"],
        backend=p["backend"],
        random_state=0,
        n_jobs=p["threads"],
    )
    with Timed() as timer:
        transformer.fit(scaled)
    result = {**timer.result(), "pixels_used": transformer.occupancy_["pixels_used"]}
    if p.get("quality") and p.get("run", 0) == 0:
        layout = transformer.embedding_
        result["trust"] = {k: _trustworthiness(scaled.T, layout, k) for k in p["quality"]}
    if p.get("save_mapping") and p.get("run", 0) == 0:
        from textvision.deepinsight.store import save_mapping

        transformer.set_params(scaler="log")
        transformer.scale_ = fit_scaler(X, "log")
        info = {"fit_on": "all", "n_fit_rows": len(X), "layers": list(range(1, 7))}
        save_mapping(transformer, p["save_mapping"], {**info, "model": "bench", "hidden_size": 0})
    return result


# -- the one-feature-per-pixel methods against TINTOlib -----------------------------------------
def _minmax_scaled(path: str, rows: int, features: int) -> np.ndarray:
    """Rows of the matrix, min-max scaled per feature (TINTOlib's default MinMaxScaler, the
    same array on both sides; scaling untimed), keeping `features` columns evenly strided."""
    from bench.common import read_matrix
    from textvision.deepinsight.functional import apply_scaler, fit_scaler

    X = read_matrix(Path(path), rows)
    X = X[:, np.linspace(0, X.shape[1] - 1, features).round().astype(int)]
    return apply_scaler(X, "minmax", fit_scaler(X, "minmax")).astype(np.float64)


def _igtd_error(scaled: np.ndarray, slot: np.ndarray, pixels: int) -> float:
    from textvision.deepinsight.igtd import (
        feature_distances,
        layout_error,
        pixel_ranks,
        rank_matrix,
    )

    features = rank_matrix(feature_distances(scaled, "euclidean"))
    return layout_error(slot, features, pixel_ranks(pixels), False)


def _tintolib(p: dict, method: str, scaled: np.ndarray, **kwargs) -> tuple[np.ndarray, float]:
    """TINTOlib's `method` on `scaled` in the interpreter `p["tintolib_python"]` (an environment
    with TINTOlib and its own pins; `python -m bench.references`): its layout and the seconds
    of its fit alone."""
    import json
    import subprocess
    import tempfile

    from bench.common import interpreter_env

    python = p["tintolib_python"]
    env = interpreter_env(Path(python))
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.npy", Path(folder) / "out.npy"
        np.save(source, scaled)
        cmd = [python, "-m", "bench.references", method, str(source), str(target),
               json.dumps(kwargs)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd[:4])}: {proc.stderr[-2000:]}")
        return np.load(target), json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


@task
def igtd_ref(p: dict) -> dict:
    """TINTOlib's IGTD (Euclidean, abs error) on the min-max scaled matrix, seeded by the run
    (it picks the feature to move at random among the least recently moved)."""
    scaled = _minmax_scaled(p["embeddings"], p["rows"], p["features"])
    settings = {k: p[k] for k in ("max_step", "val_step", "min_gain")}
    slot, seconds = _tintolib(
        p, "igtd", scaled, pixels=p["pixels"], error="abs", seed=p["run"] + 1, **settings
    )
    return {"seconds": seconds, "error": _igtd_error(scaled, slot, p["pixels"])}


@task
def igtd_ours(p: dict) -> dict:
    """textvision's IGTDTransformer(scaler="none") on the same matrix and settings."""
    from textvision.deepinsight.igtd import IGTDTransformer

    scaled = _minmax_scaled(p["embeddings"], p["rows"], p["features"])
    settings = {k: p[k] for k in ("max_step", "val_step", "min_gain")}
    igtd = IGTDTransformer(p["pixels"], "none", error="abs", n_jobs=p["threads"], **settings)
    with Timed() as timer:
        igtd.fit(scaled)
    slot = igtd.pixels_[:, 0] * p["pixels"] + igtd.pixels_[:, 1]
    return {**timer.result(), "error": _igtd_error(scaled, slot, p["pixels"]),
            "steps": igtd.n_steps_}  # fmt: skip


@task
def refined_ref(p: dict) -> dict:
    """TINTOlib's REFINED (MDS, greedy start, MPI hill climbing on 2 ranks) seeded by the run,
    and the time of one evaluation of its error at the full matrix's size (what each candidate
    swap costs it)."""
    from textvision.deepinsight.refined import euclidean_distances, refined_error

    scaled = _minmax_scaled(p["embeddings"], p["rows"], p["features"])
    pixels, seconds = _tintolib(
        p, "refined", scaled, hc_iterations=p["hc_iterations"], seed=p["run"] + 1
    )
    result = {"seconds": seconds, "error": refined_error(pixels, euclidean_distances(scaled))}
    if p.get("run", 0) == 0:
        result["evaluation_seconds"] = _tintolib_refined_evaluation(p)
    return result


def _tintolib_refined_evaluation(p: dict) -> float:
    """Seconds of one evaluation of TINTOlib's REFINED error (`paraHill.universial_corr`) on
    all features, in the TINTOlib interpreter."""
    import subprocess

    code = (
        "import time, numpy as np; from TINTOlib.utils import paraHill; "
        f"n = {p['all_features']}; side = int(np.ceil(np.sqrt(n))); "
        "rng = np.random.default_rng(0); x = rng.uniform(size=(n, 8)); "
        "d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)); "
        "m = np.full(side * side, -1); m[:n] = np.arange(n); m = m.reshape(side, side); "
        "t = time.perf_counter(); paraHill.universial_corr(d, m); "
        "print(time.perf_counter() - t)"
    )
    proc = subprocess.run([p["tintolib_python"], "-c", code], capture_output=True, text=True)
    return float(proc.stdout.strip().splitlines()[-1])


@task
def refined_ours(p: dict) -> dict:
    """textvision's REFINEDTransformer(scaler="none") on the same matrix."""
    from textvision.deepinsight.refined import (
        REFINEDTransformer,
        euclidean_distances,
        refined_error,
    )

    scaled = _minmax_scaled(p["embeddings"], p["rows"], p["features"])
    side = int(np.ceil(np.sqrt(scaled.shape[1])))
    refined = REFINEDTransformer(
        side, "none", hc_iterations=p["hc_iterations"], n_jobs=p["threads"]
    )
    with Timed() as timer:
        refined.fit(scaled)
    error = refined_error(refined.pixels_, euclidean_distances(scaled))
    return {**timer.result(), "error": error}


# -- DeepInsight render ------------------------------------------------------------------------
def _pydeepinsight(transformer):
    """pyDeepInsight's ImageTransformer holding our rotated positions (its own rotation has a
    sign bug in _minimum_bounding_rectangle), as tests/test_deepinsight.py does."""
    from pyDeepInsight import ImageTransformer

    class Fixed:
        def __init__(self, coords):
            self.coords = coords

        def fit_transform(self, X):
            return self.coords

    ref = ImageTransformer(feature_extractor=Fixed(transformer.coords_), pixels=transformer.pixels)
    ref.fit(np.zeros((2, len(transformer.coords_))))
    ref._xrot = transformer.coords_
    ref._calculate_coords()
    assert (ref.coords() == transformer.pixels_).all()
    return ref


def _norm2(transformer):
    from pyDeepInsight.utils._norm2 import Norm2Scaler

    scaler = Norm2Scaler()
    scaler._min0, scaler._max = transformer.scale_["min"], transformer.scale_["max"]
    return scaler


@task
def render_ref(p: dict) -> dict:
    """pyDeepInsight transform(X, img_format="scalar") of the log-scaled rows (scaling before
    the timed section)."""
    from bench.common import read_matrix
    from textvision.deepinsight.store import load_mapping

    transformer, _ = load_mapping(p["mapping"])
    ref = _pydeepinsight(transformer)
    X = read_matrix(Path(p["embeddings"]), p["rows"])
    scaled = _norm2(transformer).transform(X)
    del X
    with Timed() as timer:
        images = ref.transform(scaled, img_format="scalar")
    if p.get("save") and p.get("run", 0) == 0:
        np.save(p["save"], images.astype(np.float32))
    return {**timer.result(), "dtype": str(images.dtype)}


@task
def render_ours(p: dict) -> dict:
    """textvision DeepInsightTransformer.transform(X) of the raw rows (scaling inside)."""
    from bench.common import read_matrix
    from textvision.deepinsight.store import load_mapping

    transformer, _ = load_mapping(p["mapping"])
    transformer.set_params(n_jobs=p["threads"])
    X = read_matrix(Path(p["embeddings"]), p["rows"])
    transformer.transform(X[:2])  # builds the gather plan, as a fitted transformer holds it
    with Timed() as timer:
        images = transformer.transform(X)
    if p.get("save") and p.get("run", 0) == 0:
        np.save(p["save"], images)
    return {**timer.result(), "dtype": str(images.dtype)}


@task
def render_step_ref(p: dict) -> dict:
    """The step with pyDeepInsight, embeddings.h5 -> images.h5: read all rows, log-scale
    (Norm2Scaler), transform, write float32 images."""
    import h5py

    from textvision.deepinsight.store import load_mapping

    transformer, _ = load_mapping(p["mapping"])
    ref, scaler = _pydeepinsight(transformer), _norm2(transformer)
    with Timed() as timer:
        with h5py.File(p["embeddings"], "r") as fh:
            X = fh["cls"][:]
        X = X.reshape(len(X), -1)
        images = ref.transform(scaler.transform(X), img_format="scalar")
        with h5py.File(p["out"], "w") as fh:
            fh.create_dataset(
                "images",
                data=images.astype(np.float32),
                chunks=(min(256, len(X)), *images.shape[1:]),
            )
    Path(p["out"]).unlink()
    return timer.result()


@task
def render_step_ours(p: dict) -> dict:
    """textvision.deepinsight.render.render_images (the workflow's render_images rule)."""
    from textvision.deepinsight.render import render_images

    with Timed() as timer:
        render_images(p["embeddings"], p["mapping"], p["out"], threads=p["threads"])
    if p.get("keep"):
        return timer.result()
    Path(p["out"]).unlink()
    return timer.result()


# -- training ----------------------------------------------------------------------------------
def _training_inputs(p: dict):
    import torch

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((p["n_images"], p["pixels"], p["pixels"]), np.float32))
    labels = torch.from_numpy(rng.integers(0, 2, p["n_images"]))
    return images, labels


@task
def train_ref(p: dict) -> dict:
    """The original code's loop: input -> per-batch scalar normalisation -> x3 upsampling ->
    backbone slice in train mode with requires_grad True (not optimised), recomputed every
    step -> head -> classifier; Adam on head and classifier."""
    import torch
    from torch import nn

    from textvision.core.backbones import parse_backbone
    from textvision.models.network import InputAdapter, build_backbone, build_head

    _threads(p["threads"])
    torch.manual_seed(0)
    images, labels = _training_inputs(p)
    arch, spec = parse_backbone(p["backbone"])
    body = build_backbone(p["backbone"], "none").body  # the same slice, un-frozen below
    body.requires_grad_(True)
    head, classifier = build_head(arch, spec.channels, 2)
    net = nn.Sequential(InputAdapter(0.0, 1.0, upsample=p["upsample"], per_batch=True), body, head)
    optimizer = torch.optim.Adam(
        [
            {"params": head.parameters(), "lr": 5e-5},
            {"params": classifier.parameters(), "lr": 1e-3},
        ]
    )
    order = torch.Generator().manual_seed(0)
    batch = p["batch_size"]
    with Timed() as timer:
        net.train()
        classifier.train()
        perm = torch.randperm(len(labels), generator=order)
        for i in range(0, len(labels), batch):
            idx = perm[i : i + batch]
            logits = classifier(net(images[idx]))
            loss = nn.functional.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()
    return {**timer.result(), "images_per_s": len(labels) / timer.seconds}


@task
def train_ours(p: dict) -> dict:
    """textvision.train.step's machinery for one epoch: the net placed as train_backbone places it
    (channels-last on a CPU) on `device` (default cpu), FrozenBackbone (no_grad, eval) maps
    computed once into FeatureSource's cache (inside the timed section), then train_epoch's head
    and classifier steps, in `precision` (`training.precision`: float32 or bfloat16)."""
    import torch

    from textvision.core.backbones import parse_backbone
    from textvision.core.device import autocast, training_precision
    from textvision.models.network import InputAdapter, TextVisionNet, build_backbone, build_head
    from textvision.train.step import FeatureSource, place, train_epoch

    _threads(p["threads"])
    torch.manual_seed(0)
    images, labels = _training_inputs(p)
    arch, spec = parse_backbone(p["backbone"])
    mu, sigma = float(images.mean()), float(images.std())
    device = torch.device(p.get("device", "cpu"))
    net = TextVisionNet(
        InputAdapter(mu, sigma, upsample=p["upsample"]),
        build_backbone(p["backbone"], "none"),
        *build_head(arch, spec.channels, 2),
    )
    place(net, device)
    optimizer = torch.optim.Adam(
        [
            {"params": net.head.parameters(), "lr": 5e-5},
            {"params": net.classifier.parameters(), "lr": 1e-3},
        ]
    )
    order = torch.Generator().manual_seed(0)
    amp = autocast(training_precision(p.get("precision", "float32"), device), device)
    with Timed() as timer:
        source = FeatureSource(net, images, True, p["batch_size"], device, amp)
        train_epoch(net, source, labels, optimizer, p["batch_size"], order, amp)
    return {**timer.result(), "images_per_s": len(labels) / timer.seconds}


# -- prediction --------------------------------------------------------------------------------
@task
def predict_ours(p: dict) -> dict:
    """textvision.predict.step.predict_texts: the `n` real reviews of the Parquet file `source`
    (written by the harness) -> predictions.csv through the bundle, loaded inside the timed
    section as a user's command loads it."""
    from textvision.config.settings import PredictSettings
    from textvision.predict.step import predict_texts

    _threads(p["threads"])
    out = Path(p["out"]) / f"predictions_{p['n']}.csv"
    settings = PredictSettings.make(device="cpu")
    with Timed() as timer:
        predict_texts(p["bundle"], p["source"], out, settings)
    return {**timer.result(), "n": p["n"]}


@task
def explain_ours(p: dict) -> dict:
    """textvision.explain.attribution.integrated_gradients (the workflow's default steps and
    number of reference texts) of the first of a seeded sample of real reviews that fills the
    encoder's 512 tokens, through the bundle (loaded before the timed section); the references are
    other reviews of the sample."""
    from bench.common import imdb_texts
    from textvision.bundle.model import load_bundle
    from textvision.config.schema import schema_default
    from textvision.explain.attribution import (
        IG_STEPS,
        DifferentiablePath,
        integrated_gradients,
        reference_tokens,
    )

    _threads(p["threads"])
    path = DifferentiablePath(load_bundle(p["bundle"], device="cpu"))
    texts = imdb_texts(200, Path(p["imdb"]), seed=2)
    text = next(t for t in texts if len(t.split()) > 600)
    others = [t for t in texts if t != text][: schema_default("explain.references")]
    with Timed() as timer:
        references = reference_tokens(path, others)
        result = integrated_gradients(path, text, steps=IG_STEPS, references=references)
    return {
        **timer.result(),
        "tokens": len(result.tokens.ids),
        "steps": result.steps,  # IG_STEPS, or more where completeness asked for more
        "baselines": result.baselines,
        "completeness_error": result.completeness_error,
    }


def main() -> None:
    warnings.filterwarnings("ignore")
    name, params = sys.argv[1], json.loads(sys.argv[2])
    result = TASKS[name](params)
    print(MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
