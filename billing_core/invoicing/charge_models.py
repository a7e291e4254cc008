"""Usage charge models: how a metric's month of usage becomes an amount. Pure: no I/O, no clock.

Every model first takes away the plan's included quantity; what is left is the **billable**
quantity, and the model prices that (in the plan currency, at full precision; the invoice
line rounds once):

- `per_unit`: `q x unit_price` (the model every plan had before tiers);
- `graduated`: each tier prices the units that fall in it: tier 1 up to its `up_to`, tier 2
  the next ones, ... (Stripe's and Lago's "graduated");
- `volume`: the tier `q` falls in prices all `q` units (Stripe's "volume");
- `package`: `ceil(q / package_size)` started blocks x `unit_price` (the price of one block).

Tiers count billable units (above the included quantity). A tier's `up_to` is inclusive, as in
Stripe: with tiers up to 1,000 and above, unit 1,000 is in the first tier and unit 1,001 in the
second. The last tier has no `up_to` (unbounded). A tier may carry a `flat_fee`, charged once
when any unit falls in it (graduated) or when it is the tier `q` falls in (volume). Nothing is
charged, flat fees included, when nothing is billable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum

_ZERO = Decimal(0)


class ChargeModel(StrEnum):
    """Lago's and Stripe's names for how usage above the included quantity is priced."""

    PER_UNIT = "per_unit"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"


@dataclass(frozen=True, slots=True)
class Tier:
    """A price tier over billable units: up to `up_to` (inclusive; None: no limit)."""

    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal = _ZERO


@dataclass(frozen=True)
class MetricTerms:
    """A plan's usage metric: included quantity, charge model and prices (plan currency).

    `unit_price` is the price per unit (per_unit) or per block (package); tiered models use
    `tiers` instead.
    """

    metric: str
    included: Decimal
    unit_price: Decimal
    unit: str = ""
    model: ChargeModel = ChargeModel.PER_UNIT
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None


@dataclass(frozen=True, slots=True)
class UsageCharge:
    """A metric priced: billable quantity, amount (plan currency, full precision) and how."""

    quantity: Decimal
    amount: Decimal
    unit_amount: Decimal
    explanation: str


def billable_quantity(used: Decimal, included: Decimal) -> Decimal:
    """How much of `used` lies above the included quantity (never negative)."""
    return used - included if used > included else _ZERO


def _num(value: Decimal) -> str:
    # 'f' writes a normalized 1.2E+6 as 1,200,000: no exponent, no trailing zeros.
    return f"{value.normalize():,f}"


def usage_charge(terms: MetricTerms, used: Decimal) -> UsageCharge:
    """Price `used` under `terms`; the amount is exact (round once where it becomes a line)."""
    q = billable_quantity(used, terms.included)
    model = terms.model
    if q == 0:
        return UsageCharge(_ZERO, _ZERO, terms.unit_price, "nothing above the included quantity")
    if model is ChargeModel.PER_UNIT:
        price = terms.unit_price
        return UsageCharge(q, q * price, price, f"{_num(q)} x {_num(price)} per unit")
    if model is ChargeModel.PACKAGE:
        size = terms.package_size or Decimal(1)
        blocks = (q / size).to_integral_value(rounding=ROUND_CEILING)
        amount = blocks * terms.unit_price
        return UsageCharge(
            q,
            amount,
            amount / q,
            f"{_num(blocks)} started block(s) of {_num(size)} x {_num(terms.unit_price)}",
        )
    if model is ChargeModel.GRADUATED:
        amount, parts = graduated(q, terms.tiers)
        return UsageCharge(q, amount, amount / q, "graduated: " + " + ".join(parts))
    amount, text = volume(q, terms.tiers)
    return UsageCharge(q, amount, amount / q, "volume: " + text)


def graduated(q: Decimal, tiers: Sequence[Tier]) -> tuple[Decimal, list[str]]:
    """Each tier prices the units inside it; returns the amount and one text per tier used."""
    amount = _ZERO
    parts: list[str] = []
    lower = _ZERO
    for tier in tiers:
        if q <= lower:
            break
        top = q if tier.up_to is None or q < tier.up_to else tier.up_to
        units = top - lower
        amount += units * tier.unit_price + tier.flat_fee
        fee = f" + {_num(tier.flat_fee)} flat" if tier.flat_fee else ""
        parts.append(f"{_num(units)} x {_num(tier.unit_price)}{fee}")
        if tier.up_to is None:
            break
        lower = tier.up_to
    return amount, parts


def volume(q: Decimal, tiers: Sequence[Tier]) -> tuple[Decimal, str]:
    """The tier `q` falls in prices every unit; returns the amount and its text."""
    for tier in tiers:
        if tier.up_to is None or q <= tier.up_to:
            fee = f" + {_num(tier.flat_fee)} flat" if tier.flat_fee else ""
            bound = "above" if tier.up_to is None else f"up to {_num(tier.up_to)}"
            text = f"{_num(q)} x {_num(tier.unit_price)} (tier {bound}){fee}"
            return q * tier.unit_price + tier.flat_fee, text
    # Validation requires an unbounded last tier; a quantity past every tier bills the last.
    last = tiers[-1]
    return q * last.unit_price + last.flat_fee, f"{_num(q)} x {_num(last.unit_price)}"


def tier_problems(
    model: ChargeModel, tiers: Sequence[Tier], package_size: Decimal | None
) -> list[str]:
    """What is wrong with a metric's tiers for its model, as sentences (empty when fine)."""
    problems: list[str] = []
    if model in (ChargeModel.GRADUATED, ChargeModel.VOLUME):
        if not tiers:
            problems.append(f"a {model} metric needs at least one tier")
            return problems
        previous = _ZERO
        for i, tier in enumerate(tiers, start=1):
            if tier.unit_price < 0 or tier.flat_fee < 0:
                problems.append(f"tier {i}: prices must be zero or more")
            if tier.up_to is None:
                if i != len(tiers):
                    problems.append(f"tier {i}: only the last tier may have no up_to")
            elif tier.up_to <= previous:
                problems.append(f"tier {i}: up_to must be above the previous tier's ({previous})")
            else:
                previous = tier.up_to
        if tiers[-1].up_to is not None:
            problems.append("the last tier must have no up_to (it prices everything above)")
    elif tiers:
        problems.append(f"tiers are only used by graduated and volume metrics, not {model}")
    if model is ChargeModel.PACKAGE:
        if package_size is None or package_size <= 0:
            problems.append("a package metric needs a package_size above zero")
    elif package_size is not None:
        problems.append(f"package_size is only used by package metrics, not {model}")
    return problems
