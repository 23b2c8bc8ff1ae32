"""The one Markdown table writer (textvision.core.markdown) every table of the project goes
through: results.md, config/README.md, the benchmarks' tables."""

from textvision.core.markdown import cell, markdown_section, markdown_table


def test_a_table_is_a_header_a_separator_and_a_line_per_row():
    text = markdown_table(["a", "b"], [["1", "2"], ["3", "4"]])
    assert text == "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |"


def test_a_table_ends_without_a_line_break_so_callers_join_it_with_their_lines():
    assert not markdown_table(["a"], [["1"]]).endswith("\n")
    assert "\n".join(["## T", "", markdown_table(["a"], [])]) == "## T\n\n| a |\n|---|"


def test_cells_are_written_with_str_and_blank_cells_keep_their_spaces():
    text = markdown_table(["n", "x", "blank"], [[3, 0.5, ""], [None, True, ""]])
    assert text.splitlines()[2:] == ["| 3 | 0.5 |  |", "| None | True |  |"]


def test_rows_may_be_any_iterable_of_sequences():
    rows = ((str(i), str(i * i)) for i in range(3))
    assert markdown_table(("i", "square"), rows).splitlines()[-1] == "| 2 | 4 |"


def test_the_writer_does_not_escape_cells_itself():
    # a cell may hold Markdown on purpose (a link, `code`): escaping is the caller's, per cell
    assert markdown_table(["link"], [["[a](b|c)"]]).splitlines()[-1] == "| [a](b|c) |"


def test_cell_escapes_pipes_and_turns_line_breaks_into_spaces():
    assert cell("a|b") == "a\\|b"
    assert cell("one\ntwo") == "one two"
    assert cell("a  b\t c ") == "a  b\t c "  # other white space kept as it is
    assert cell(3.5) == "3.5" and cell(None) == "None"


def test_cell_with_fold_makes_wrapped_text_one_line():
    assert cell("  a wrapped\n  description | with  a pipe\n", fold=True) == (
        "a wrapped description \\| with a pipe"
    )
    assert cell("", fold=True) == ""


def test_an_escaped_cell_keeps_the_table_s_columns():
    line = markdown_table(["k", "v"], [[cell("x|y"), cell("1\n2")]]).splitlines()[-1]
    assert line == "| x\\|y | 1 2 |"
    assert len(line.replace("\\|", "").split("|")) == 4


def test_a_section_follows_what_came_before_after_a_blank_line_and_blocks_stay_apart():
    text = "# Page\n" + markdown_section("Title", "A paragraph.", "- a\n- b", "| t |")
    assert text == "# Page\n\n## Title\n\nA paragraph.\n\n- a\n- b\n\n| t |\n"
