"""Money as a person reads it: "$1,234.57", and sub-cent amounts without hiding them.

A call usually costs a fraction of a cent, and so may a test budget: "$0.00 of $0.00"
says nothing. `format_money` is the one format of figures shown to people (the CLI, the
magic and the widgets): cents from one cent up, three significant digits below a cent,
trailing zeros kept so that a column of small costs reads alike ("$0.00120",
"$0.0000450"), "—" where the amount is unknown; `exact=True` gives every stored digit (the
counters' unit is 1e-10 USD), for a call's detail and reconciling counters. `format_usd`
(alert texts) keeps three significant figures below a dollar. Rounding is half-up on the
decimal a person reads (float 9.025 is 9.02499...; it shows as $9.03).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

_CENT = Decimal("0.01")
_SMALLEST = -10  # exponent of the counters' unit
_UNIT = Decimal(1).scaleb(_SMALLEST)
SIGNIFICANT = 3  # digits of an amount below a cent
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


def format_money(value: float | Decimal | None, *, exact: bool = False) -> str:
    """USD for people: "$12.34", "$0.50", "$0.00"; below a cent three significant digits,
    trailing zeros kept ("$0.00120"); None -> "—". `exact`: every stored digit, at least
    two decimals ("$0.0037912345", "$1.50")."""
    if value is None:
        return MISSING
    amount = _decimal(value)
    if amount is None:
        return f"${value}"
    if exact:  # to the counters' unit: a float's binary noise (0.30000000000000004) is not a digit
        whole, _, decimals = _dollars(amount.quantize(_UNIT, rounding=ROUND_HALF_UP)).partition(".")
        return f"{whole}.{decimals.rstrip('0').ljust(2, '0')}"
    if amount == 0:
        return "$0.00"
    if abs(amount) < _UNIT:
        return f"{'-' if amount < 0 else ''}<$0.0000000001"
    if abs(amount) < _CENT:
        digits = amount.quantize(
            Decimal(1).scaleb(amount.adjusted() - SIGNIFICANT + 1), rounding=ROUND_HALF_UP
        )
        if abs(digits) < _CENT:  # $0.009996 rounds up to a cent: shown as one
            return _dollars(digits)
    return _dollars(amount.quantize(_CENT, rounding=ROUND_HALF_UP))


def format_count(value: float | None) -> str:
    """A count with thousands separators ("12,345"); None -> "—"."""
    return MISSING if value is None else f"{int(value):,}"


def _decimal(value: float | Decimal) -> Decimal | None:
    try:
        amount = Decimal(str(value))  # the float as it reads, not its binary expansion
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def _dollars(amount: Decimal) -> str:
    return f"{'-' if amount < 0 else ''}${abs(amount):,f}"
