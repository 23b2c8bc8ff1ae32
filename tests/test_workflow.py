"""The real Snakemake DAG on tiny data: outputs, incremental rebuilds, report, determinism."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, planned_jobs, run_snakemake, write_config
from scipy import stats

from bench.common import SNAKEMAKE
from textvision.report.step import COLUMNS
from textvision.train.metrics import classification_metrics
from textvision.train.predictions import class_probabilities, read_predictions

pytestmark = pytest.mark.slow

TIMING = {"seconds", "train_seconds", "images_per_second"}


def test_every_output_of_the_contract_exists(tiny_run):
    out = tiny_run / "out"
    for path in [
        "data/dataset.parquet",
        "embeddings/embeddings.h5",
        "deepinsight/mapping.h5",
        "images/images.h5",
        "train/alexnet/seed0/metrics.json",
        "train/shufflenet_v2_x1_0/seed1/metrics.json",
        "baselines/logreg/metrics.json",
        "domain/alexnet.json",
        "domain/shufflenet_v2_x1_0_frechet.png",
        "report/results.csv",
        "report/results.md",
        "report/domain_shift.png",
    ]:
        assert (out / path).stat().st_size > 0, path
    with h5py.File(out / "embeddings/embeddings.h5") as fh:
        assert fh["cls"].shape == (48, 2, 384)
    with h5py.File(out / "images/images.h5") as fh:
        assert fh["images"].shape == (48, 16, 16) and fh["images"].dtype == np.float32
        assert {"mu", "sigma"} <= set(fh.attrs)
    assert not list(out.rglob(".*.tmp-*"))  # no temporary file survives
    assert not list(out.rglob("checkpoint.pt"))


def test_the_report_links_the_explained_texts(tiny_run):
    """`explain.enabled`: each explained model's texts are listed with working links, and the
    image model's attribution mass per BERT layer sums to 1 per class."""
    import re

    out = tiny_run / "out"
    text = (out / "report/results.md").read_text()
    section = text[text.index("## Explained predictions") :]
    links = re.findall(r"\]\(([^)]+)\)", section)
    assert {"../explain/alexnet/index.html", "../explain/logreg/index.html"} <= set(links)
    assert all((out / "report" / link).resolve().is_file() for link in links), links
    pages = [link for link in links if link.endswith(".html") and "index" not in link]
    assert len(pages) == 4  # two texts per model
    assert section.count("Baseline: the mean over 8 training texts") == 2  # explain.references
    shares = re.findall(r"^\| (\d+) \| ([\d.]+)% \| ([\d.]+)% \|$", section, flags=re.M)
    assert [layer for layer, *_ in shares] == ["5", "6"]
    for k in (1, 2):
        assert sum(float(row[k]) for row in shares) == pytest.approx(100, abs=0.2)


def test_report_matches_the_metrics_files(tiny_run):
    out = tiny_run / "out"
    table = pd.read_csv(out / "report/results.csv")
    assert list(table.columns) == COLUMNS
    assert table["model"].tolist() == [
        "alexnet", "shufflenet_v2_x1_0", "logreg", "shuffled/alexnet"
    ]  # fmt: skip
    rows = table.set_index("model")
    for model, folder in [
        ("alexnet", "train/alexnet"),
        ("shufflenet_v2_x1_0", "train/shufflenet_v2_x1_0"),
        ("shuffled/alexnet", "variants/shuffled/train/alexnet"),
    ]:
        runs = [json.loads((out / f"{folder}/seed{s}/metrics.json").read_text()) for s in (0, 1)]
        row = rows.loc[model]
        for key, values in [
            ("val_accuracy_last", [m["val_accuracy_last"] for m in runs]),
            ("val_accuracy_best", [m["val_accuracy_best"] for m in runs]),
            ("test_accuracy", [m["test_best"]["accuracy"] for m in runs]),
        ]:
            mean, std = np.mean(values), np.std(values, ddof=1)
            half = stats.t.ppf(0.975, 1) * std / np.sqrt(2)
            assert row[f"{key}_mean"] == pytest.approx(mean)
            assert row[f"{key}_std"] == pytest.approx(std)
            assert row[f"{key}_ci_low"] == pytest.approx(max(mean - half, 0))
            assert row[f"{key}_ci_high"] == pytest.approx(min(mean + half, 1))
            assert row[f"{key}_seeds"] == ";".join(f"{v:.6f}" for v in values)
        assert row["test_macro_f1_mean"] == pytest.approx(
            np.mean([m["test_best"]["macro_f1"] for m in runs])
        )
        assert row["weights"] == "none" and row["n_seeds"] == 2 and row["seeds"] == "0;1"
    assert rows.loc["alexnet", "layout"] == "fitted"
    assert rows.loc["shuffled/alexnet", "layout"] == "shuffled"
    assert rows.loc["shuffled/alexnet", "variant"] == "shuffled"
    assert rows.loc["alexnet", "paper_val_accuracy"] == 0.87
    assert rows.loc["shufflenet_v2_x1_0", "reproduction_val_accuracy"] == 0.812
    logreg = json.loads((out / "baselines/logreg/metrics.json").read_text())
    assert rows.loc["logreg", "test_accuracy_mean"] == logreg["test_best"]["accuracy"]
    md = (out / "report/results.md").read_text()
    assert "SYNTHETIC" in md and "random init: no transfer" in md and "fitted on **train**" in md
    assert "**test acc** [95% CI]" in md and "shuffled layout" in md
    assert "## Cost per rule" in md and "| train_variant | 2 |" in md  # every job's benchmark
    assert "| explain_backbone | 1 |" in md and "| explain_logreg | 1 |" in md
    for fig in ("accuracy", "learning_curves", "confusion", "comparisons", "costs"):
        assert (out / f"report/{fig}.png").read_bytes()[:4] == b"\x89PNG"
    for fig in ("feature_density", "class_means", "samples", "feature_map"):
        assert (out / f"deepinsight/{fig}.png").read_bytes()[:4] == b"\x89PNG"


PREDICTED = ["train/alexnet/seed0", "variants/shuffled/train/alexnet/seed1", "baselines/logreg"]


@pytest.mark.parametrize("folder", PREDICTED)
def test_predictions_reproduce_the_metrics_exactly(tiny_run, folder):
    out = tiny_run / "out"
    metrics = json.loads((out / folder / "metrics.json").read_text())
    table = read_predictions(out / folder / "predictions.parquet")
    names = metrics["label_names"]
    dataset = pd.read_parquet(out / "data/dataset.parquet")
    for split, key in (("val", "val_best"), ("test", "test_best")):
        rows = table[table["split"] == split]
        truth = dataset[dataset["split"] == split]
        assert rows["id"].tolist() == truth["id"].tolist()
        assert rows["label"].tolist() == [names[k] for k in truth["label"]]
        labels = np.searchsorted(names, rows["label"])
        assert classification_metrics(labels, class_probabilities(rows, names)) == metrics[key]
    assert set(table["split"]) == {"val", "test"}


def test_comparisons_pair_the_same_examples(tiny_run):
    out = tiny_run / "out"
    table = pd.read_csv(out / "report/comparisons.csv")
    assert table[["a", "b"]].values.tolist() == [
        ["shuffled/alexnet", "alexnet"],
        ["alexnet", "logreg"],
        ["shufflenet_v2_x1_0", "logreg"],
    ]
    results = pd.read_csv(out / "report/results.csv").set_index("model")
    for row in table.to_dict("records"):
        assert row["split"] == "test" and row["n_examples"] == 12
        for side in ("a", "b"):
            assert row[f"accuracy_{side}"] == pytest.approx(
                results.loc[row[side], "test_accuracy_mean"]
            )
        assert row["difference"] == pytest.approx(row["accuracy_a"] - row["accuracy_b"])
        assert row["ci_low"] <= row["difference"] <= row["ci_high"]
        assert 0 <= row["p_value"] <= 1
    assert "## Paired comparisons" in (out / "report/results.md").read_text()


def test_variants_share_the_upstream_outputs(tmp_path):
    """Two more variants: one embedding job for all; a mapping only for the variant that
    changes DeepInsight; training jobs per variant backbone and seed."""
    variants = {
        "random": {"training": {"backbones": ["alexnet"], "seeds": [0]}},
        "assignment": {"deepinsight": {"discretization": "assignment"}},
    }
    write_config(tmp_path, {"variants": variants})
    jobs = planned_jobs(tmp_path)
    assert jobs["embed_shard"] == 1 and jobs["merge_embeddings"] == 1
    assert jobs["fit_mapping"] == 1 and jobs["fit_mapping_variant"] == 2  # shuffled, assignment
    assert jobs["train"] == 4 and jobs["train_variant"] == 2 + 1 + 4


def test_changing_perplexity_reruns_no_data_or_embedding_job(tiny_run):
    jobs = planned_jobs(tiny_run, "--config", 'deepinsight={"tsne":{"perplexity":7}}')
    assert {"prepare_data", "embed_shard", "merge_embeddings", "baseline_logreg"}.isdisjoint(jobs)
    assert jobs["fit_mapping"] == 1 and jobs["render_images"] == 1 and jobs["train"] == 4
    assert jobs["fit_mapping_variant"] == 1 and jobs["train_variant"] == 2  # the shuffled one
    assert jobs["report"] == 1


def test_changing_a_variants_override_reruns_that_variant_only(tiny_run):
    shuffled = {"deepinsight": {"layout": "shuffled", "layout_seed": 3}}
    jobs = planned_jobs(tiny_run, "--config", f"variants={json.dumps({'shuffled': shuffled})}")
    assert jobs == {
        "fit_mapping_variant": 1, "render_images_variant": 1, "train_variant": 2,
        "report": 1, "all": 1,
    }  # fmt: skip


def test_changing_one_learning_rate_reruns_that_backbones_jobs_and_the_report(tiny_run):
    assert planned_jobs(tiny_run) == {}  # up to date
    jobs = planned_jobs(tiny_run, "--config", 'training={"lr":{"alexnet":{"head":"1e-3"}}}')
    # one job per seed of alexnet, in the main run and in the variant that inherits the rate;
    # the explanation of its first seed (`explain.enabled`)
    assert jobs == {"train": 2, "train_variant": 2, "explain_backbone": 1, "report": 1, "all": 1}


def test_more_seeds_add_training_jobs_and_nothing_upstream(tiny_run):
    jobs = planned_jobs(tiny_run, "--config", 'training={"seeds": [0, 1, 2]}')
    assert jobs == {"train": 2, "train_variant": 1, "report": 1, "all": 1}


def test_changing_the_domain_settings_reruns_only_the_domain_jobs_and_the_report(tiny_run):
    jobs = planned_jobs(tiny_run, "--config", 'domain={"n_reference": 16}')
    assert jobs == {"domain_shift": 2, "report": 1, "all": 1}


def test_changing_batchnorm_reruns_training_and_the_report(tiny_run):
    """`adapt` for AlexNet (no BatchNorm) is refused while the workflow is read, so no job of
    the finished run is touched; for a slice with BatchNorm the setting is in the training
    jobs' params (they and the report rerun), not in the domain step's (which reports both)."""
    from textvision.config.schema import prepare_config
    from textvision.config.settings import DomainSettings, TrainSettings, step_params

    proc = run_snakemake(tiny_run, "-n", "--config", 'training={"batchnorm": "adapt"}', check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "backbone alexnet (weights none) has no BatchNorm layer to adapt" in said
    assert "rule train" not in said
    frozen, adapt = (prepare_config({"training": {"batchnorm": b}}) for b in ("frozen", "adapt"))
    for cls, differs in ((TrainSettings, True), (DomainSettings, False)):
        params = [step_params(cls, c, backbone="shufflenet_v2_x1_0") for c in (frozen, adapt)]
        assert (params[0] != params[1]) == differs, cls


def test_domain_shift_outputs_and_the_report_section(tiny_run):
    out = tiny_run / "out"
    md = (out / "report/results.md").read_text()
    section = md.split("## Domain shift", 1)[1]
    assert "reference `sklearn` (24 natural crops of 48x48 from 2 photos)" in section
    assert "24 of 24 training text images" in section
    for backbone in ("alexnet", "shufflenet_v2_x1_0"):
        result = json.loads((out / f"domain/{backbone}.json").read_text())
        assert result["reference"]["n_images"] == 24 and result["text"]["n_images"] == 24
        (sl,) = result["slices"]  # weights none: the configured slice is the random one
        for variant in ("raw", "zscore", "pixel"):
            frechet = sl["variants"][variant]["frechet"]
            assert f"| {backbone} | none | {variant} | {frechet:.4g} |" in section
        for fig in ("inputs", "normalisation", "histograms", "frechet"):
            assert (out / f"domain/{backbone}_{fig}.png").read_bytes()[:4] == b"\x89PNG"
    assert "no BatchNorm" in section and "random init: no running statistics" in section
    assert pd.read_csv(out / "report/results.csv")["batchnorm"].tolist()[:2] == ["frozen"] * 2


def test_lint_and_format():
    import subprocess

    proc = subprocess.run(
        [*SNAKEMAKE, "--lint", "-s", str(REPO / "Snakefile"), "-d", str(REPO)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "good condition" in proc.stdout + proc.stderr


def test_html_report_holds_the_table_and_figures(tiny_run, tmp_path):
    html = tmp_path / "report.html"
    run_snakemake(tiny_run, "--report", str(html))
    text = html.read_text(errors="ignore")
    for name in (
        "results.md",
        "accuracy.png",
        "learning_curves.png",
        "confusion.png",
        "feature_density.png",
        "class_means.png",
        "samples.png",
        "feature_map.png",
        "domain_shift.png",
        "alexnet_inputs.png",
        "shufflenet_v2_x1_0_histograms.png",
        "Domain shift",
    ):
        assert name in text, name


def test_same_config_twice_gives_bit_identical_outputs(tiny_run, tiny_run_one_core):
    a, b = tiny_run / "out", tiny_run_one_core / "out"
    assert (a / "data/dataset.parquet").read_bytes() == (b / "data/dataset.parquet").read_bytes()
    for path, names in (
        ("embeddings/embeddings.h5", ["cls", "label", "split", "id"]),
        ("images/images.h5", ["images", "label", "split"]),
        (
            "deepinsight/mapping.h5",
            ["embedding", "coords", "pixels", "feature_counts", "scale/min", "scale/max"],
        ),
    ):
        with h5py.File(a / path) as fa, h5py.File(b / path) as fb:
            for name in names:
                assert np.array_equal(fa[name][()], fb[name][()]), (path, name)
    for metrics in sorted(a.glob("train/*/seed*/metrics.json")) + [
        a / "baselines/logreg/metrics.json"
    ]:
        ma = json.loads(metrics.read_text())
        mb = json.loads((b / metrics.relative_to(a)).read_text())
        assert _drop(ma) == _drop(mb), metrics


def _drop(m):
    if isinstance(m, dict):
        return {k: _drop(v) for k, v in m.items() if k not in TIMING}
    if isinstance(m, list):
        return [_drop(v) for v in m]
    return m


def _h5_equal(a, b) -> list[str]:
    """Names of datasets or attributes that differ between two HDF5 files."""
    differ = []
    with h5py.File(a) as fa, h5py.File(b) as fb:
        names = []
        fa.visititems(lambda n, node: names.append(n) if isinstance(node, h5py.Dataset) else None)
        assert names, a
        differ += [n for n in names if not np.array_equal(fa[n][()], fb[n][()])]
        differ += [k for k in fa.attrs if not np.array_equal(fa.attrs[k], fb.attrs.get(k))]
    return differ


def test_one_core_and_two_cores_give_the_same_outputs(tiny_run, tiny_run_one_core):
    """Every product of the run, bit for bit up to the images; training on its pinned thread
    count; timings aside."""
    a, b = tiny_run / "out", tiny_run_one_core / "out"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    compared = 0
    for rel in files:
        if rel.suffix == ".h5":
            assert _h5_equal(a / rel, b / rel) == [], rel
        elif rel.suffix == ".parquet" or rel.name.endswith(".csv") and "history" not in rel.name:
            if rel.name == "results.csv":
                ta, tb = (pd.read_csv(x / rel) for x in (a, b))
                timing = [c for c in ta.columns if "seconds" in c or "per_second" in c]
                pd.testing.assert_frame_equal(ta.drop(columns=timing), tb.drop(columns=timing))
            else:
                assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        elif rel.name == "history.csv":
            ha, hb = (pd.read_csv(x / rel).drop(columns="seconds") for x in (a, b))
            pd.testing.assert_frame_equal(ha, hb)
        elif rel.suffix == ".json":
            assert _drop(json.loads((a / rel).read_text())) == _drop(
                json.loads((b / rel).read_text())
            ), rel
        elif rel.name == "model.pt":
            import torch

            ma, mb = (torch.load(x / rel, weights_only=True) for x in (a, b))
            for part in ("head", "classifier"):
                for key, value in ma["best"][part].items():
                    assert torch.equal(value, mb["best"][part][key]), (rel, part, key)
        else:
            continue
        compared += 1
    assert compared >= 19  # 4 HDF5, dataset, results, 5 metrics, 4 models, 4 histories


def test_realrun_compares_two_runs_rule_by_rule(tiny_run, tiny_run_one_core):
    """`python -m bench.realrun` on the two tiny runs: every rule's jobs from the logs, CPU time
    and memory from the benchmark files, the accuracies from the metrics files."""
    runs = []
    for run in (tiny_run, tiny_run_one_core):
        logs = sorted((run / ".snakemake/log").glob("*.snakemake.log"))  # the first: the run
        runs += ["--before" if not runs else "--after", str(logs[0]), str(run / "out")]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.realrun", *runs], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split(" | ")[0].strip("| "): line for line in proc.stdout.splitlines()}
    out = tiny_run / "out"
    for rule in {
        p.relative_to(out / "benchmarks").parts[0] for p in out.glob("benchmarks/**/*.tsv")
    }:
        jobs = len(list((out / "benchmarks" / rule).rglob("*.tsv")))
        cells = rows[rule].split(" | ")
        assert cells[1] == f"{jobs} / {jobs}" and cells[4] != "-" and cells[5] != "- |", rule
    accuracy = json.loads((out / "train/alexnet/seed0/metrics.json").read_text())
    accuracy = f"{accuracy['val_accuracy_best']:.3f}"
    assert rows["alexnet"].endswith(f"| {accuracy} | {accuracy} |")
    assert "**the whole run (Snakemake's elapsed time)**" in rows
    assert float(rows["**after / before**"].split("**")[3]) > 0


@pytest.fixture(scope="module")
def finished_copy(tiny_run, tmp_path_factory):
    """One copy of the finished tiny run (outputs and Snakemake's records) for the dry runs
    that delete a product each."""
    import shutil

    return shutil.copytree(tiny_run, tmp_path_factory.mktemp("finished") / "run", symlinks=True)


@pytest.mark.parametrize(
    ("product", "expected"),
    [
        ("embeddings/embeddings.h5", {"merge_embeddings": 1}),
        ("deepinsight/mapping.h5", {"fit_mapping": 1}),
        ("images/images.h5", {"render_images": 1}),
        ("train/alexnet/seed1/model.pt", {"train": 1}),
        ("train/shufflenet_v2_x1_0/seed0/metrics.json", {"train": 1}),
        ("baselines/logreg/metrics.json", {"baseline_logreg": 1}),
        ("domain/alexnet.json", {"domain_shift": 1}),
        ("data/dataset.parquet", {"prepare_data": 1}),
        ("train/alexnet/seed0/learning_curve.png", {"train": 1}),
        ("train/alexnet/seed0/history.csv", {"train": 1}),
        ("train/alexnet/seed0/bundle/bundle.json", {"train": 1}),
        ("baselines/logreg/predictions.parquet", {"baseline_logreg": 1}),
        ("variants/shuffled/train/alexnet/seed1/learning_curve.png", {"train_variant": 1}),
        ("variants/shuffled/deepinsight/mapping.h5", {"fit_mapping_variant": 1}),
        ("variants/shuffled/images/images.h5", {"render_images_variant": 1}),
        ("domain/shufflenet_v2_x1_0_frechet.png", {"domain_shift": 1}),
        ("deepinsight/feature_map.png", {"plot_mapping": 1}),
        ("report/comparisons.csv", {"report": 1}),
    ],
)
def test_a_deleted_product_is_rebuilt(finished_copy, product, expected):
    """A copy of the finished run with one product deleted: the default target rebuilds it
    (and what depends on it), nothing upstream of it."""
    path = finished_copy / "out" / product
    aside = path.with_name(f".{path.name}.aside")
    path.rename(aside)  # deleted for this case, put back after it
    try:
        jobs = planned_jobs(finished_copy)
    finally:
        aside.rename(path)
    assert {rule: jobs.get(rule) for rule in expected} == expected, jobs
    chain = ["prepare_data", "embed_shard"]  # the first steps, in order
    first = min((chain.index(rule) for rule in expected if rule in chain), default=len(chain))
    assert set(chain[:first]).isdisjoint(jobs), jobs
