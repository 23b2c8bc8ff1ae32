"""What each job of a run cost, from Snakemake's `benchmark:` files
(`{outdir}/benchmarks/<rule>/<wildcards>.tsv`): wall time, CPU time and peak memory per job and
per rule, with the `resources:` a cluster run of the same config would ask for."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from textvision.core.errors import InputError
from textvision.core.markdown import markdown_table

COLUMNS = ["rule", "job", "wall_s", "cpu_s", "max_rss_mb"]
HEADROOM = 1.5  # suggested resources: the largest job's peak memory and wall time times this


def _job(path: Path) -> tuple[str, str]:
    """(rule, job) from `.../benchmarks/<rule>[/<more>...]/<name>.tsv`."""
    parts = path.parts
    below = parts[len(parts) - parts[::-1].index("benchmarks") :] if "benchmarks" in parts else ()
    if len(below) < 2:
        return path.stem, path.stem
    return below[0], "/".join((*below[1:-1], path.stem))


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # "NA": the job ended before the first sample
    return None if math.isnan(number) else number


def read_costs(files: list[str | Path]) -> pd.DataFrame:
    """One row per benchmark file (its last line: the latest run of the job)."""
    rows = []
    for path in map(Path, files):
        try:
            table = pd.read_csv(path, sep="\t")
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise InputError(f"{path}: not a readable Snakemake benchmark file ({err})") from err
        missing = {"s", "max_rss", "cpu_time"} - set(table.columns)
        if missing or table.empty:
            raise InputError(
                f"{path}: expected Snakemake benchmark columns s, max_rss, cpu_time and a row; "
                f"found {list(table.columns)}"
            )
        last = table.iloc[-1]
        rule, job = _job(path)
        rows.append(
            {
                "rule": rule,
                "job": job,
                "wall_s": _number(last["s"]),
                "cpu_s": _number(last["cpu_time"]),
                "max_rss_mb": _number(last["max_rss"]),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def per_rule(costs: pd.DataFrame) -> pd.DataFrame:
    """Jobs, total and largest wall time, total CPU time, largest peak memory per rule, and the
    `mem_mb` and `runtime` (minutes) to ask a cluster for: the largest job's times HEADROOM."""
    grouped = costs.groupby("rule", sort=False)
    table = pd.DataFrame(
        {
            "jobs": grouped.size(),
            "wall_s_total": grouped["wall_s"].sum(),
            "wall_s_max": grouped["wall_s"].max(),
            "cpu_s_total": grouped["cpu_s"].sum(min_count=1),
            "max_rss_mb": grouped["max_rss_mb"].max(),
        }
    )
    table["mem_mb"] = np.ceil(table["max_rss_mb"].fillna(0) * HEADROOM / 100).astype(int) * 100
    table["runtime"] = np.ceil(table["wall_s_max"] * HEADROOM / 60).astype(int).clip(lower=1)
    return table.reset_index()


def _amount(value, digits: int = 1) -> str:
    """`value` with thousands separators and `digits` decimals; blank where missing."""
    return "" if value is None or pd.isna(value) else f"{value:,.{digits}f}"


RULE_COLUMNS = [
    "rule", "jobs", "wall s (total)", "wall s (largest job)", "CPU s (total)", "peak RSS MB",
    "mem_mb", "runtime",
]  # fmt: skip


def _rule_cells(row: dict) -> list:
    """A row of `per_rule` as the cells of RULE_COLUMNS."""
    return [
        row["rule"],
        row["jobs"],
        _amount(row["wall_s_total"]),
        _amount(row["wall_s_max"]),
        _amount(row["cpu_s_total"]),
        _amount(row["max_rss_mb"], 0),
        row["mem_mb"],
        row["runtime"],
    ]


def costs_markdown(costs: pd.DataFrame, missing: int = 0) -> str:
    """The report's "Cost per rule" section: a table per rule and, for training, per job;
    `missing`: jobs without a benchmark file, said under the table."""
    rules = per_rule(costs)
    lines = [
        "",
        "## Cost per rule",
        "",
        "From each job's Snakemake `benchmark:` file (`benchmarks/`): wall time, CPU time "
        "(user + system, all threads) and peak resident memory. `mem_mb` and `runtime` "
        f"(minutes) are the largest job's times {HEADROOM}: what to put in the config's "
        "`resources:` for a cluster run of the same size. Figure: `costs.png`.",
        "",
        markdown_table(RULE_COLUMNS, [_rule_cells(row) for row in rules.to_dict("records")]),
    ]
    if missing:
        lines += [
            "",
            f"{missing} job(s) have no benchmark file (run before benchmark files were "
            "recorded, or by another tool): not in the table.",
        ]
    training = costs[costs["rule"].str.startswith("train")]
    if not training.empty:
        jobs = [
            [
                row["job"],
                _amount(row["wall_s"]),
                _amount(row["cpu_s"]),
                _amount(row["max_rss_mb"], 0),
            ]
            for row in training.to_dict("records")
        ]
        lines += ["", markdown_table(["training job", "wall s", "CPU s", "peak RSS MB"], jobs)]
    return "\n".join(lines) + "\n"
