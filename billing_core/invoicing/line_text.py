"""Words and numbers a customer reads on an invoice line, and the number texts of line tables.

Pure: no I/O. Descriptions pushed to Stripe are written for the customer, not for us: month
names instead of 'YYYY-MM', service names without a doubled 'AWS' prefix, metric display names
instead of identifiers, thousands separators, singular and plural units. Stored quantities and
unit amounts stay exact; only their text changes (never exponent notation such as '1.2E+6').
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from billing_core.periods import Period

# Display names of the metrics plans commonly meter; other metrics get `_fallback_label`.
METRIC_LABELS = {
    "api_calls": "API calls",
    "api_requests": "API requests",
    "seats": "Seats",
    "users": "Users",
    "licences": "Licences",
    "licenses": "Licenses",
    "clusters": "Clusters",
    "storage_gb": "Storage (GB)",
    "storage_tb": "Storage (TB)",
    "bandwidth_gb": "Bandwidth (GB)",
    "egress_gb": "Data transfer out (GB)",
    "compute_hours": "Compute hours",
}
# Words written in capitals inside a metric identifier; units among them become '(GB)'.
_ACRONYMS = {"api": "API", "cpu": "CPU", "gpu": "GPU", "sms": "SMS", "ip": "IP", "vm": "VM"}
_UNIT_SUFFIXES = {"gb": "GB", "tb": "TB", "mb": "MB", "gib": "GiB", "tib": "TiB"}
# AWS service names that already say whose they are (Cost Explorer's SERVICE values).
_SERVICE_PREFIXES = ("AWS ", "Amazon ")
# Units whose singular is not the plural without its final 's'.
_SINGULAR = {"licences": "licence", "licenses": "license", "hours": "hour", "calls": "call"}


# Cached: every line of every invoice asks for the same few months and services, and
# parsing them each time was a quarter of pricing's time (bench/: pricing throughput).
@lru_cache(maxsize=256)
def month_label(period: str) -> str:
    """'2026-10' -> 'October 2026'; text that is not a period is returned unchanged."""
    try:
        p = Period.parse(period)
    except Exception:  # a description keeps what it was given rather than failing a draft
        return period
    return f"{p.start:%B} {p.year}"


@lru_cache(maxsize=4096)
def service_label(service: str) -> str:
    """A service as a customer reads it: 'AWS Lambda' stays, 'EC2 - Other' -> 'AWS EC2 - Other'."""
    name = service.strip()
    return name if name.startswith(_SERVICE_PREFIXES) else f"AWS {name}"


def shared_cost_description(period: str, markup_pct: Decimal = Decimal(0)) -> str:
    """'Shared AWS costs, October 2026' (with the service fee note AWS lines carry)."""
    note = f" (incl. {markup_pct.normalize():f}% service fee)" if markup_pct else ""
    return f"Shared AWS costs, {month_label(period)}{note}"


def metric_label(metric: str) -> str:
    """A metric's display name: the known table, else 'egress_gb' -> 'Egress (GB)'."""
    return METRIC_LABELS.get(metric) or _fallback_label(metric)


def _fallback_label(metric: str) -> str:
    words = [w for w in metric.replace("-", "_").split("_") if w]
    if not words:
        return metric
    unit = _UNIT_SUFFIXES.get(words[-1].lower()) if len(words) > 1 else None
    if unit:
        words = words[:-1]
    shown = [_ACRONYMS.get(w.lower(), w.lower()) for w in words]
    text = " ".join(shown)
    text = text[:1].upper() + text[1:]
    return f"{text} ({unit})" if unit else text


def unit_label(unit: str, quantity: Decimal) -> str:
    """The unit for `quantity`: '1 user', '2 users'; abbreviations ('GB') never change."""
    word = unit.strip()
    if not word or not word.isalpha() or not word.islower():
        return word
    plural = word if word.endswith("s") else f"{word}s"
    if quantity != 1:
        return plural
    return _SINGULAR.get(plural, plural[:-1])


def quantity_text(value: Decimal) -> str:
    """A quantity for people: '1,200,000', '12.5': exact, thousands separators, no exponent."""
    return f"{value.normalize():,f}"  # 'f' writes a normalized 1.2E+6 without its exponent


def with_unit(text: str, value: Decimal, unit: str | None) -> str:
    """A shown quantity and its unit, the unit singular for exactly one: '1 cluster',
    '2 clusters', '1.5 clusters', '1 GB'; the text alone without a unit."""
    if not unit:
        return text
    if value == 1 and unit.endswith("s") and not unit.endswith("ss") and len(unit) > 2:
        unit = unit[:-1]
    return f"{text} {unit}"


def plain_decimal(value: Decimal, min_places: int = 0) -> str:
    """A decimal for a CSV cell: exact, no exponent, no separators, at least `min_places`."""
    return f"{_at_least(_plain(value), min_places):f}"


def amount_text(value: Decimal, min_places: int) -> str:
    """A unit amount for people: '20.00', '0.0003', '74.0469': at least the currency's digits
    (`min_places`), trailing zeros dropped, no exponent, rounded for reading only (half up) to
    4 decimals from 1 up and 6 below (sub-cent prices); the stored value stays exact."""
    plain = _plain(value)
    most = max(min_places, 4 if abs(plain) >= 1 else 6)
    exponent = plain.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > most:
        plain = _plain(plain.quantize(Decimal(1).scaleb(-most), rounding=ROUND_HALF_UP))
    return f"{_at_least(plain, min_places):,f}"


def _plain(value: Decimal) -> Decimal:
    # normalize() drops trailing zeros but may produce an exponent (1.2E+6); quantize to
    # exponent 0 restores integers, formatting with 'f' then never shows an exponent.
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    return normal.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normal


def _at_least(value: Decimal, places: int) -> Decimal:
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent < places:
        return value.quantize(Decimal(1).scaleb(-places))
    return value


def overage_description(
    metric: str, unit: str, over: Decimal, included: Decimal, period: str
) -> str:
    """'API calls: 1,200,000 calls over the 10,000,000 included, October 2026'."""
    head, tail = _overage_frame(metric, unit, included, period)
    over_text = f"{quantity_text(over)} {unit_label(unit, over)}".rstrip()
    return f"{head}{over_text}{tail}"


# Cached: what stays the same for every customer of a plan's metric in a month (the quantity
# differs per customer, so caching whole descriptions mostly missed).
@lru_cache(maxsize=4096)
def _overage_frame(metric: str, unit: str, included: Decimal, period: str) -> tuple[str, str]:
    included_text = f"{quantity_text(included)}"
    # Abbreviated units read better after both numbers: '5 GB over the 100 GB included'.
    if unit and not unit.islower():
        included_text = f"{included_text} {unit_label(unit, included)}"
    return f"{metric_label(metric)}: ", f" over the {included_text} included, {month_label(period)}"
