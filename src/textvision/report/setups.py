"""Several runs' reports in one table: `results.csv` and `comparisons.csv` of each report folder,
a leading `setup` column naming the run (the first setup, the paper's dimensions, ...). A column
that a run's report lacks (written by a version that did not record it) is blank in its rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from textvision.core.errors import ConfigError, InputError
from textvision.core.io import atomic_path

REPORT_TABLES = {"results.csv": ("model",), "comparisons.csv": ("a", "b")}  # table: its keys


@dataclass(frozen=True)
class Setup:
    """One run's report folder (`<outdir>/report`) and the name its rows carry."""

    name: str
    report: Path

    @classmethod
    def parse(cls, text: str) -> Setup:
        """`NAME=DIR`, as `--report` takes it."""
        name, sep, folder = text.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(
                f"--report {text!r}: expected NAME=DIR, e.g. imdb=results/imdb/report"
            )
        return cls(name, Path(folder))


def _read_table(setup: Setup, table: str) -> pd.DataFrame:
    path = setup.report / table
    if not path.is_file():
        raise InputError(f"{path}: no such file (setup {setup.name!r} needs its report's {table})")
    frame = pd.read_csv(path)
    if "setup" in frame.columns:
        raise InputError(f"{path}: already has a 'setup' column (a combined table, not a report's)")
    if missing := [key for key in REPORT_TABLES[table] if key not in frame.columns]:
        raise InputError(f"{path}: no column {', '.join(missing)}: not a report's {table}")
    return frame


def merged_columns(frames: list[pd.DataFrame]) -> list[str]:
    """Every frame's columns once, each in its frame's order: a column only a later frame has
    goes right after the column it follows there."""
    columns: list[str] = []
    for frame in frames:
        before = -1
        for column in frame.columns:
            if column not in columns:
                columns.insert(before + 1, column)
            before = columns.index(column)
    return columns


def combine_tables(setups: list[Setup], table: str) -> pd.DataFrame:
    """One report table of every setup, in the order given, `setup` first."""
    frames = [_read_table(setup, table) for setup in setups]
    columns = merged_columns(frames)
    named = [f.assign(setup=s.name) for s, f in zip(setups, frames, strict=True)]
    return pd.concat(named, ignore_index=True)[["setup", *columns]]


def combine_reports(reports: list[str], outdir: str | Path) -> dict[str, Path]:
    """Write `outdir/results.csv` and `outdir/comparisons.csv` holding every `NAME=DIR` report's
    rows under its NAME; nothing is written unless every table reads."""
    setups = [Setup.parse(text) for text in reports]
    names = [s.name for s in setups]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"--report: setup name(s) given twice: {', '.join(twice)}")
    tables = {table: combine_tables(setups, table) for table in REPORT_TABLES}
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = {}
    for table, frame in tables.items():
        with atomic_path(outdir / table) as tmp:
            frame.to_csv(tmp, index=False)
        written[table] = outdir / table
    return written
