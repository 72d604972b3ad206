"""The widgets' shared parts: the sortable table, the message line, error reporting."""

from __future__ import annotations

import ipywidgets as widgets
import pytest
from ipywidgets.widgets.widget import _instances

from lcm_jupyter.client import LCMClientError
from lcm_jupyter.core.money import format_usd
from lcm_jupyter.ui._common import Column, Messages, Table, heading, reporting, usd

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
        (1234.5678, "$1,234.57"),
        (9.025, "$9.03"),  # the float is 9.0249999...; rounded as the decimal reads
        (0.5, "$0.50"),
        (0.012345, "$0.0123"),  # three significant figures below a dollar
        (0.00000615, "$0.00000615"),
        (-0.3, "-$0.30"),
        (1e-12, "<$0.0000000001"),  # below the counters' unit
    ],
)
def test_money_reads_as_a_person_expects(value, text):
    assert format_usd(value) == text == usd(value)
