"""Money conversion into the reporting currency, exact.

Theory of operation: amounts are integer minor units of an ISO-4217 currency. With ``rate``
= units of the reporting currency per 1 unit of the currency (``rules.fx``, a Decimal) and
the exponents ``e_cur``, ``e_rep`` (``rules.minor_units``)::

    reporting_minor = round_half_even(amount_minor * rate * 10 ** (e_rep - e_cur))

computed in integers: ``rate * 10 ** (e_rep - e_cur)`` is an exact fraction ``num / den``
(cached per rate and shift), the result is ``amount_minor * num / den`` rounded once, half
to even (banker's rounding: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2). No binary floating point, no
Decimal context precision. The reporting currency
itself converts as the identity. A currency missing from ``rules.fx`` is never guessed:
``Rejected("unknown_currency")``.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from processors.errors import UNKNOWN_CURRENCY, Rejected
from processors.rules import Rules


def round_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (denominator > 0) rounded to an int, half to even."""
    q, r = divmod(numerator, denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q % 2 == 1):
        q += 1
    return q


@lru_cache(maxsize=1024)
def _factor(rate: Decimal, shift: int) -> tuple[int, int]:
    f = Fraction(rate) * Fraction(10) ** shift
    return f.numerator, f.denominator


def to_reporting_minor(amount_minor: int, currency: str, rules: Rules) -> int:
    """``amount_minor`` of ``currency`` in minor units of ``rules.reporting_currency``."""
    if currency == rules.reporting_currency:
        return amount_minor
    rate = rules.fx.get(currency)
    if rate is None:
        raise Rejected(
            UNKNOWN_CURRENCY,
            f"currency {currency!r} has no rate in the rules "
            f"(known: {', '.join(sorted(rules.fx))})",
        )
    shift = rules.minor_units[rules.reporting_currency] - rules.minor_units[currency]
    num, den = _factor(rate, shift)
    return round_half_even(amount_minor * num, den)
