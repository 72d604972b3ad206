"""Money as a person reads it: "$1,234.57", and sub-dollar amounts without hiding them.

A call usually costs a fraction of a cent, and so may a test budget: "$0.00 of $0.00"
says nothing. Below one dollar, three significant figures are kept (at least two
decimals, at most ten: the counters' unit is 1e-10 USD), so $0.00000615 reads as such.
Rounding is half-up on the decimal a person reads (float 9.025 is 9.02499...; it shows
as $9.03).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

_CENT = Decimal("0.01")
_SMALLEST = -10  # exponent of the counters' unit
MISSING = "—"


def format_usd(value: float | Decimal | None) -> str:
    """Dollars: two decimals from $1 up, three significant figures below; None -> "—"."""
    if value is None:
        return MISSING
    try:
        amount = Decimal(str(value))
        if abs(amount) >= 1 or amount == 0:
            amount = amount.quantize(_CENT, rounding=ROUND_HALF_UP)
        else:
            exponent = max(amount.adjusted() - 2, _SMALLEST)
            amount = amount.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        return f"${value}"
    if amount == 0 and value > 0:
        return "<$0.0000000001"
    sign = "-" if amount < 0 else ""
    whole, _, decimals = f"{abs(amount):,f}".partition(".")
    return f"{sign}${whole}.{decimals.rstrip('0').ljust(2, '0')}"
