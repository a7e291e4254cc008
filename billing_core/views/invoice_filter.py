"""What finance selected on the invoices page, as SQL: periods, statuses, customers, currencies,
age buckets and overdue (views/receivables.py defines them), free-text search, issued and paid
date ranges. The page, its CSV exports and `export-invoices` share it, so an export holds
exactly what the page shows.

Free-text search matches an invoice when the text is part of its number or Stripe id, of the
name or email it was issued to, or of its customer's current name or email (any case); text that
reads as an amount ("123.45", "1,234", "$99") also matches invoices whose total is exactly that
amount in their own currency (USD 123.45, KWD 123.450; JPY only for whole amounts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from billing_core.file_names import export_file_name
from billing_core.models import Customer, Invoice, display_status_in
from billing_core.money import THREE_DECIMAL, ZERO_DECIMAL
from billing_core.periods import utcnow
from billing_core.views.receivables import bucket_clause, overdue_clause

_AMOUNT = re.compile(r"^-?\d+(?:\.\d+)?$")
_AMOUNT_NOISE = re.compile(r"[\s,$€£¥]")


@dataclass(frozen=True)
class InvoiceFilter:
    """What finance selected; empty tuples, None and '' mean 'all'.

    Periods are inclusive YYYY-MM bounds; issued_*/paid_* inclusive UTC dates; buckets are
    AgeBucket values and, like overdue, select receivables judged at `as_of` (None: the
    clock when the query is built).
    """

    period_from: str | None = None
    period_to: str | None = None
    statuses: tuple[str, ...] = ()
    customer_ids: tuple[int, ...] = ()
    currencies: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()
    overdue: bool = False
    search: str = ""
    issued_from: date | None = None
    issued_to: date | None = None
    paid_from: date | None = None
    paid_to: date | None = None
    as_of: datetime | None = None

    def file_name(self, what: str) -> str:
        """'invoices_2026-09_paid-open_EUR_customer-3.csv': what, then each filter set."""
        if self.period_from and self.period_to and self.period_from != self.period_to:
            months: str | None = f"{self.period_from}-to-{self.period_to}"
        elif self.period_from or self.period_to:
            bound = self.period_from or self.period_to
            months = (
                bound
                if self.period_from == self.period_to
                else (f"from-{bound}" if self.period_from else f"until-{bound}")
            )
        else:
            months = None
        customers = [f"customer-{c}" for c in self.customer_ids]
        return export_file_name(
            what,
            months,
            self.statuses,
            self.currencies,
            customers,
            "overdue" if self.overdue else None,
            [f"age-{b}" for b in self.buckets],
            _range_name("issued", self.issued_from, self.issued_to),
            _range_name("paid-on", self.paid_from, self.paid_to),
            f"search-{self.search.strip()}" if self.search.strip() else None,
        )


def _range_name(what: str, start: date | None, end: date | None) -> str | None:
    if start and end:
        return f"{what}-{start}-to-{end}" if start != end else f"{what}-{start}"
    if start:
        return f"{what}-from-{start}"
    if end:
        return f"{what}-until-{end}"
    return None


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _date_range(column: Any, start: date | None, end: date | None) -> list[ColumnElement[bool]]:
    tests: list[ColumnElement[bool]] = []
    if start:
        tests.append(column >= _day_start(start))
    if end:
        tests.append(column < _day_start(end + timedelta(days=1)))
    return tests


def search_amount(text: str) -> Decimal | None:
    """The amount `text` reads as ('1,234.50' -> 1234.50, '$99' -> 99), or None."""
    plain = _AMOUNT_NOISE.sub("", text)
    if not _AMOUNT.match(plain):
        return None
    try:
        return Decimal(plain)
    except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
        return None


def _amount_clause(amount: Decimal) -> ColumnElement[bool] | None:
    """SQL: the invoice's total is `amount` in its own currency's minor units."""
    currency = col(Invoice.currency)
    total = col(Invoice.total_minor)
    by_exponent = {
        0: currency.in_(sorted(ZERO_DECIMAL)),
        3: currency.in_(sorted(THREE_DECIMAL)),
        2: currency.not_in(sorted(ZERO_DECIMAL | THREE_DECIMAL)),
    }
    tests = []
    for digits, in_currency in by_exponent.items():
        minor = amount.scaleb(digits)
        if minor == minor.to_integral_value():
            tests.append(and_(in_currency, total == int(minor)))
    return or_(*tests) if tests else None


def search_clause(text: str) -> ColumnElement[bool]:
    """SQL: the invoice matches the free-text search (see the module's docstring)."""
    text = text.strip()
    customers = sa_select(col(Customer.id)).where(
        or_(
            col(Customer.name).icontains(text, autoescape=True),
            col(Customer.email).icontains(text, autoescape=True),
        )
    )
    tests: list[ColumnElement[bool]] = [
        col(Invoice.number).icontains(text, autoescape=True),
        col(Invoice.stripe_invoice_id).icontains(text, autoescape=True),
        col(Invoice.customer_name).icontains(text, autoescape=True),
        col(Invoice.customer_email).icontains(text, autoescape=True),
        col(Invoice.customer_id).in_(customers),
    ]
    amount = search_amount(text)
    amount_test = _amount_clause(amount) if amount is not None else None
    if amount_test is not None:
        tests.append(amount_test)
    return or_(*tests)


Q = Any  # a select() over Invoice (plain or multi-column)


def apply_filter(query: Q, f: InvoiceFilter) -> Q:
    """Add the filter's WHERE clauses to a query that selects from Invoice."""
    if f.period_from:
        query = query.where(col(Invoice.period) >= f.period_from)
    if f.period_to:
        query = query.where(col(Invoice.period) <= f.period_to)
    if f.statuses:
        query = query.where(display_status_in(f.statuses))
    if f.customer_ids:
        query = query.where(col(Invoice.customer_id).in_(f.customer_ids))
    if f.currencies:
        query = query.where(col(Invoice.currency).in_(f.currencies))
    as_of = f.as_of or utcnow()
    if f.buckets:
        query = query.where(bucket_clause(f.buckets, as_of))
    if f.overdue:
        query = query.where(overdue_clause(as_of))
    if f.search.strip():
        query = query.where(search_clause(f.search))
    for test in _date_range(col(Invoice.issued_at), f.issued_from, f.issued_to):
        query = query.where(test)
    for test in _date_range(col(Invoice.paid_at), f.paid_from, f.paid_to):
        query = query.where(test)
    return query
