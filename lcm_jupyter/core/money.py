"""Money as a person reads it: "$1,234.57", and sub-dollar amounts without hiding them.

A call usually costs a fraction of a cent, and so may a test budget: "$0.00 of $0.00"
says nothing. Below one dollar, up to six decimals are kept (at least two), so
$0.0042 reads as such. Rounding is half-up on the decimal a person reads (float
9.025 is 9.02499...; it shows as $9.03).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

_CENT = Decimal("0.01")
_MICRO = Decimal("0.000001")
MISSING = "—"


def format_usd(value: float | Decimal | None) -> str:
    """Dollars: two decimals from $1 up, up to six (at least two) below; None -> "—"."""
    if value is None:
        return MISSING
    try:
        amount = Decimal(str(value))
        if abs(amount) >= 1:
            amount = amount.quantize(_CENT, rounding=ROUND_HALF_UP)
        else:
            amount = amount.quantize(_MICRO, rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        return f"${value}"
    if amount == 0 and value > 0:
        return "<$0.000001"
    sign = "-" if amount < 0 else ""
    text = f"{abs(amount):,f}"
    whole, _, decimals = text.partition(".")
    decimals = decimals.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{decimals}"
