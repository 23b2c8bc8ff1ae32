"""textvision.report.setups: several runs' report tables in one, through `textvision
combine-reports`."""

from __future__ import annotations

import pandas as pd
import pytest

from textvision.cli import main

RESULTS = pd.DataFrame(
    {"model": ["resnet18@layer1", "logreg"], "test_accuracy_mean": [0.7575, 0.8198123456789]}
)
COMPARISONS = pd.DataFrame({"a": ["resnet18@layer1"], "b": ["logreg"], "difference": [-0.0623]})


def report(folder, results=RESULTS, comparisons=COMPARISONS):
    folder.mkdir(parents=True)
    results.to_csv(folder / "results.csv", index=False)
    comparisons.to_csv(folder / "comparisons.csv", index=False)
    return folder


def combine(*args: str) -> int:
    return main(["combine-reports", *args])


def test_rows_of_each_setup_in_order_with_a_leading_setup_column(tmp_path):
    first = report(tmp_path / "a")
    second = report(tmp_path / "b", results=RESULTS.iloc[::-1])
    out = tmp_path / "out"
    assert combine("--report", f"minilm={first}", f"paper-dims={second}", "--outdir", str(out)) == 0
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == ["setup", *RESULTS.columns]
    assert results["setup"].tolist() == ["minilm", "minilm", "paper-dims", "paper-dims"]
    assert results["model"].tolist() == ["resnet18@layer1", "logreg", "logreg", "resnet18@layer1"]
    assert results["test_accuracy_mean"].iloc[1] == 0.8198123456789  # values round-trip exactly
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert comparisons["setup"].tolist() == ["minilm", "paper-dims"]
    assert comparisons.drop(columns="setup").iloc[0].tolist() == COMPARISONS.iloc[0].tolist()


def test_a_column_one_report_lacks_is_blank_in_its_rows_and_keeps_its_place(tmp_path):
    old = report(tmp_path / "old")
    newer = RESULTS.assign(method="igtd")[["model", "method", "test_accuracy_mean"]]
    new = report(tmp_path / "new", results=newer)
    out = tmp_path / "out"
    assert combine("--report", f"old={old}", f"new={new}", "--outdir", str(out)) == 0
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == ["setup", "model", "method", "test_accuracy_mean"]
    assert results["method"].isna().tolist() == [True, True, False, False]


@pytest.mark.parametrize(
    ("reports", "message"),
    [
        (["minilm"], "expected NAME=DIR"),
        (["a={a}", "a={b}"], "given twice: a"),
        (["a={a}", "c={missing}"], "missing/results.csv: no such file (setup 'c'"),
        (["a={a}", "x={odd}"], "odd/results.csv: no column model: not a report's results.csv"),
        (["a={a}", "x={combined}"], "combined/results.csv: already has a 'setup' column"),
    ],
)
def test_bad_reports_stop_with_one_line_and_write_nothing(tmp_path, capsys, reports, message):
    folders = {
        "a": report(tmp_path / "a"),
        "b": report(tmp_path / "b"),
        "missing": tmp_path / "missing",
        "odd": report(tmp_path / "odd", results=RESULTS.drop(columns="model")),
        "combined": report(tmp_path / "combined", results=RESULTS.assign(setup="s")),
    }
    out = tmp_path / "out"
    argv = [r.format(**folders) for r in reports]
    assert combine("--report", *argv, "--outdir", str(out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
