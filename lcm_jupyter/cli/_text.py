"""Reports as text, shared by `jupyter lcm` and `%lcm`: tables, totals, reconcile drift.

Money goes through `core.money.format_money` and counts through `format_count`, so a
cost reads "$0.0000146", never "1.455e-05", wherever it is printed.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.analytics import BREAKDOWN_BY
from ..core.money import MISSING, format_count, format_money

REPORT_BY = BREAKDOWN_BY  # the breakdown API's groupings, declared once in core.analytics
REPORT_FORMATS = ("table", "csv", "json")
REPORT_COLUMNS = (
    "name", "cost_usd", "savings_usd", "requests", "input_tokens", "output_tokens",
    "avg_latency_ms", "error_rate",
)  # fmt: skip
TOTAL_FIELDS = ("cost_usd", "savings_usd", "requests", "input_tokens", "output_tokens")
_COUNTS = frozenset({"requests", "calls", "rpm"})


def cell(column: str, value: object) -> str:
    """A value as a table shows it, by its column: money, counts, milliseconds, rates."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if column.endswith("_usd"):
        return format_money(value)
    if column in _COUNTS or column.endswith("_tokens"):
        return format_count(value)
    if column.endswith("_ms"):
        return f"{value:,.0f}"
    if column.endswith("_rate"):
        return f"{value:.1%}"
    return str(value)


def text_table(columns: Sequence[str], rows: Sequence[dict]) -> str:
    """Rows as an aligned plain-text table, numbers right-aligned (None shows as "—")."""
    cells = [[cell(c, r.get(c)) for c in columns] for r in rows]
    numeric = [
        any(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) for r in rows)
        for c in columns
    ]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(list(columns)), *(line(row) for row in cells)])


def report_totals(items: Sequence[dict]) -> dict:
    """The sums of a breakdown's items (the API's 'other' row keeps them complete)."""
    totals = {f: sum(i.get(f) or 0 for i in items) for f in TOTAL_FIELDS}
    for f in ("cost_usd", "savings_usd"):
        totals[f] = round(totals[f], 10)
    return totals


def totals_line(answer: dict, totals: dict) -> str:
    """One line: what the report covers and its totals."""
    return (
        f"{answer.get('period')} ({answer.get('start')} to {answer.get('end')}), "
        f"by {answer.get('by')}: {format_count(totals['requests'])} requests, "
        f"{format_money(totals['cost_usd'])}, saved {format_money(totals['savings_usd'])}, "
        f"{format_count(totals['input_tokens'])} input / "
        f"{format_count(totals['output_tokens'])} output tokens"
    )


def reconcile_lines(answer: dict) -> list[str]:
    """A reconcile answer, a line per key: counter, log and drift to the counters' unit for
    keys with a budget; keys without one have no counter, so nothing can drift."""
    lines = [f"reconciled {answer.get('month')} (counters: {answer.get('store')})"]
    for k in answer.get("keys", []):
        logged = format_money(k["logged_usd"], exact=True)
        if k.get("counter_usd") is None:
            lines.append(
                f"  key {k['key_id']} ({k['name']}): logged {logged}; no budget, so no "
                "counter to reconcile"
            )
            continue
        lines.append(
            f"  key {k['key_id']} ({k['name']}): counter "
            f"{format_money(k['counter_usd'], exact=True)}, logged {logged}, "
            f"drift {format_money(k['drift_usd'], exact=True)}"
        )
    if not answer.get("keys"):
        lines.append("  no key has spent anything this month")
    return lines


def shadow_lines(answer: dict) -> list[str]:
    """Per key with routing off: what auto routing would have saved, the evidence to turn it on."""
    return [
        f"auto routing would have saved {format_money(k['saving_usd'])} on "
        f"{format_count(k['calls'])} calls made with routing off by key {k['key_id']} "
        f"({k.get('name') or '?'})"
        for k in answer.get("keys", [])
    ]
