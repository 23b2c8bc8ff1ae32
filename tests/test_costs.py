"""Cost per rule from Snakemake benchmark files."""

import pytest

from textvision.core.errors import InputError
from textvision.report.costs import costs_markdown, per_rule, read_costs

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(path, *rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


def row(seconds, rss, cpu):
    return [seconds, "0:00:01", rss, 1, 1, 1, 0, 0, 50, cpu]


def test_costs_per_job_and_rule_with_suggested_resources(tmp_path):
    root = tmp_path / "out/benchmarks"
    files = [
        bench(root / "train/alexnet/seed0.tsv", row(10.0, 300.0, 19.0)),
        bench(root / "train/alexnet/seed1.tsv", row(99.0, 1, 1), row(30.0, 700.0, 55.0)),
        bench(root / "train_variant/random/alexnet/seed0.tsv", row(20.0, 500.0, 30.0)),
        bench(root / "prepare_data/prepare_data.tsv", row(0.5, "NA", "NA")),
    ]
    costs = read_costs(files)
    assert costs["rule"].tolist() == ["train", "train", "train_variant", "prepare_data"]
    assert costs["job"].tolist() == ["alexnet/seed0", "alexnet/seed1", "random/alexnet/seed0",
                                     "prepare_data"]  # fmt: skip
    assert costs["wall_s"].tolist() == [10.0, 30.0, 20.0, 0.5]  # the last line: the latest run
    assert costs["max_rss_mb"].isna().tolist() == [False, False, False, True]
    rules = per_rule(costs).set_index("rule")
    assert rules.loc["train", "jobs"] == 2 and rules.loc["train", "wall_s_total"] == 40.0
    assert rules.loc["train", "cpu_s_total"] == 74.0 and rules.loc["train", "max_rss_mb"] == 700
    assert rules.loc["train", "mem_mb"] == 1100  # 700 MB x 1.5, rounded up to 100 MB
    assert rules.loc["train", "runtime"] == 1 and rules.loc["prepare_data", "mem_mb"] == 0
    text = costs_markdown(costs)
    assert "## Cost per rule" in text
    assert "| train | 2 | 40.0 | 30.0 | 74.0 | 700 | 1100 | 1 |" in text
    assert "| random/alexnet/seed0 | 20.0 | 30.0 | 500 |" in text


def test_a_file_that_is_not_a_benchmark_is_refused(tmp_path):
    bad = tmp_path / "benchmarks/x/y.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match=r"y\.tsv: expected Snakemake benchmark columns"):
        read_costs([bad])
