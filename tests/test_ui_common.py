"""The widgets' shared parts: money, the one state a view is in, the sortable table with its
expanded row, the message line, error reporting."""

from __future__ import annotations

from decimal import Decimal

import ipywidgets as widgets
import pytest
from ipywidgets.widgets.widget import _instances

from lcm_jupyter.client import LCMClientError
from lcm_jupyter.core.money import format_money
from lcm_jupyter.ui._common import (
    DATA,
    EMPTY,
    ERROR,
    LOADING,
    Column,
    Messages,
    States,
    Table,
    cell_html,
    exact_money,
    heading,
    money,
    reporting,
    usd,
)

RECORDS = [
    {"name": "b", "cost": 0.2},
    {"name": "a", "cost": None},
    {"name": "C", "cost": 1.0},
]


def _table() -> Table:
    table = Table([Column("name", "Name"), Column("cost", "Cost", usd, numeric=True)])
    table.set_records(RECORDS)
    return table


def test_a_header_click_sorts_and_a_second_reverses_with_missing_values_last():
    table = _table()
    assert [r["name"] for r in table.rows] == ["b", "a", "C"]  # as given until a click
    table.header_buttons["cost"].click()
    assert table.text() == [["b", "$0.20"], ["C", "$1.00"], ["a", "—"]]
    assert table.header_buttons["cost"].description == "Cost ▲"
    table.header_buttons["cost"].click()
    assert table.text() == [["C", "$1.00"], ["b", "$0.20"], ["a", "—"]]
    assert table.header_buttons["cost"].description == "Cost ▼"
    table.header_buttons["name"].click()  # text sorts without regard to case
    assert [r["name"] for r in table.rows] == ["a", "b", "C"]


def open_widgets() -> int:
    """How many widgets are open in this kernel (each is also a model in the frontend)."""
    return len(_instances)


def test_a_new_render_closes_the_widgets_it_replaces():
    table = _table()
    old_grid = table.children[0]
    old_cells = list(old_grid.children)
    table.sort("name")
    assert old_grid.comm is None and all(cell.comm is None for cell in old_cells)
    assert all(cell.layout.comm is None for cell in old_cells)  # a layout is a widget too
    assert table.children[0].comm is not None
    # However often it is sorted or given records, the table holds as many widgets open.
    table.set_records(RECORDS)
    before = open_widgets()
    for field in ("name", "cost", "cost"):
        table.sort(field)
        table.set_records(RECORDS)
    assert open_widgets() == before


def test_a_column_holding_numbers_and_text_sorts_instead_of_raising():
    table = Table([Column("value", "Value")])
    table.set_records([{"value": "b"}, {"value": 2}, {"value": None}, {"value": 1}, {"value": "A"}])
    table.header_buttons["value"].click()
    assert [r["value"] for r in table.rows] == [1, 2, "A", "b", None]


def test_headings_escape_their_text():
    assert heading("Keys <all>", "a & b") == (
        '<b style="font-size:1.1em">Keys &lt;all&gt;</b> '
        '<span style="color:#555;font-size:12px">a &amp; b</span>'
    )
    assert widgets.HTML(heading("x")).value == '<b style="font-size:1.1em">x</b>'


def test_no_records_shows_the_empty_text():
    table = Table([Column("name", "Name")], empty="No calls yet.")
    assert "No calls yet." in table.children[0].value and table.text() == []


def test_reporting_turns_failures_into_one_line():
    messages = Messages()
    with reporting(messages, "load the logs"):
        raise LCMClientError(503, "database is locked")
    assert messages.kind == "error"
    assert messages.text == "Could not load the logs: HTTP 503: database is locked"
    with reporting(messages, "save"):
        raise ValueError("bad number")
    assert messages.text == "Could not save: ValueError: bad number"
    messages.clear()
    assert messages.value == "" and messages.kind == ""


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (0, "$0.00"),
        (0.0, "$0.00"),
        (1234.5678, "$1,234.57"),
        (9.025, "$9.03"),  # the float is 9.0249999...; rounded as the decimal reads
        (0.5, "$0.50"),
        (0.012345, "$0.01"),  # a cent or more: cents
        (0.015, "$0.02"),  # half-up on the decimal
        (0.01, "$0.01"),
        (0.0099951, "$0.01"),  # three digits would read $0.0100: it is a cent
        (0.009994, "$0.00999"),
        (0.0012, "$0.00120"),  # below a cent: three significant digits, zeros kept
        (0.000123456, "$0.000123"),
        (0.00000615, "$0.00000615"),
        (0.000045, "$0.0000450"),
        (-0.3, "-$0.30"),
        (-0.0012, "-$0.00120"),
        (Decimal("0.0037912345"), "$0.00379"),
        (1e-12, "<$0.0000000001"),  # below the counters' unit
    ],
)
def test_money_reads_as_a_person_expects(value, text):
    # The widgets' money is the project's one format (the CLI and the magic print it too).
    assert money(value) == text == usd(value) == format_money(value)


def test_a_column_of_small_costs_reads_alike():
    # Every sub-cent cost with the same number of digits, so they compare at a glance.
    costs = [0.00012, 0.0012, 0.00000615, 0.004]
    shown = [money(c) for c in costs]
    assert shown == ["$0.000120", "$0.00120", "$0.00000615", "$0.00400"]
    assert {len(t.lstrip("$0.")) for t in shown} == {3}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (0.0, "$0.00"),
        (0.0037912345, "$0.0037912345"),
        (1.5, "$1.50"),
        (1234.5678, "$1,234.5678"),
        (3.7912345e-05, "$0.0000379123"),  # to the counters' unit, 1e-10 USD
        (0.1 + 0.2, "$0.30"),  # a float's binary noise is no digit
    ],
)
def test_exact_money_keeps_every_stored_digit(value, text):
    assert exact_money(value) == text == format_money(value, exact=True)


def test_cells_are_cut_with_the_whole_text_as_tooltip():
    assert cell_html("a <b>", numeric=True) == (
        '<div style="text-align:right;white-space:nowrap" title="a &lt;b&gt;">a &lt;b&gt;</div>'
    )
    cut = cell_html("gpt-4o-mini ← gpt-4o", max_width="8em", tip='HTTP 429 · "slow down"')
    assert "max-width:8em;overflow:hidden;text-overflow:ellipsis" in cut
    assert 'title="HTTP 429 · &quot;slow down&quot;"' in cut


def test_one_state_at_a_time():
    messages = Messages()
    data = widgets.HTML("figures")
    states = States(messages, [data])
    shown = lambda w: w.layout.display != "none"  # noqa: E731
    states.show(LOADING, "Loading the calls…")
    assert shown(states.note) and not shown(data) and "Loading the calls" in states.note.value
    with reporting(messages, "load the calls"):
        raise LCMClientError(0, "cannot reach http://x/")
    states.show(ERROR)
    assert states.state == ERROR and messages.kind == "error"
    assert not shown(states.note) and not shown(data)  # the error alone
    states.show(EMPTY, "No calls yet.")
    assert messages.kind == "" and shown(states.note) and "No calls yet." in states.note.value
    assert not shown(data)
    states.show(ERROR, "From is after To.")
    assert messages.text == "From is after To." and not shown(states.note)
    messages.ok("Recorded +1.")  # what an action said stays through a reload
    states.show(DATA)
    assert shown(data) and not shown(states.note) and messages.kind == "ok"
    with pytest.raises(ValueError):
        states.show("done")


def test_an_expanded_row_sits_under_its_row_and_survives_a_sort():
    table = Table(
        [Column("name", "Name"), Column("cost", "Cost", usd, numeric=True)], row_key="name"
    )
    table.set_records(RECORDS)
    grid = table.children[0]
    width = len(table.columns)
    detail = widgets.HTML("detail of a")
    table.expand("a", detail)
    cells = list(grid.children)
    # header, row b, row a, then the detail, then row C
    assert cells.index(detail) == width * 3 and detail.layout.grid_area == "auto / 1 / auto / -1"
    table.sort("name")  # a, b, C: the detail follows a
    cells = list(table.children[0].children)
    assert cells.index(detail) == width * 2 and detail.comm is not None
    other = widgets.HTML("detail of C")
    table.expand("C", other)
    assert detail.comm is None  # the one it replaced is closed
    assert list(table.children[0].children).index(other) == width * 4
    table.expand(None, None)
    assert other.comm is None and len(table.children[0].children) == width * 4
    table.expand("b", widgets.HTML("b"))
    table.set_records(RECORDS)  # new records close it
    assert table.expanded is None and len(table.children[0].children) == width * 4


def test_a_table_with_max_rows_draws_that_many_and_says_how_many_more():
    table = Table([Column("n", "N")], max_rows=2)
    table.set_records([{"id": i, "n": i} for i in range(5)])
    assert table.text() == [["0"], ["1"]] and len(table.row_widgets) == 2
    assert "3 more not shown" in table.children[-1].value
    table.sort("n")
    table.sort("n")  # descending: the largest two
    assert table.text() == [["4"], ["3"]]
    table.set_records([{"id": 0, "n": 0}])
    assert len(table.children) == 1  # no "more" line
