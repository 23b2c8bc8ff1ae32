"""Markdown tables: the one writer behind every table the project prints (the report's
results.md, config/README.md, the benchmarks' tables)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(value, fold: bool = False) -> str:
    """`value` as text that stays inside one table cell: `|` escaped as `\\|`, each line break a
    space.

    Args:
        value: anything; written with `str`.
        fold: also fold every run of whitespace into one space and drop it at both ends (for
            text wrapped over lines, such as the config schema's descriptions).
    """
    text = " ".join(str(value).split()) if fold else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence, rows: Iterable[Sequence]) -> str:
    """A Markdown table, one line per row, with no line break after the last.

    Args:
        header: the column names.
        rows: the rows, each a sequence of cells written with `str` as they are: pass a cell
            that may hold `|` or a line break through `cell`.
    """
    lines = [_line(header), "|" + "---|" * len(header)]
    lines += [_line(row) for row in rows]
    return "\n".join(lines)


def markdown_section(title: str, *blocks: str) -> str:
    """A section of a Markdown page: a blank line, `## title`, then each block (a paragraph, a
    list, a table) after a blank line of its own; ending with a line break."""
    return "\n" + "\n\n".join([f"## {title}", *blocks]) + "\n"


def _line(cells: Sequence) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
