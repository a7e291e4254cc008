"""Pure reconciliation: the tolerance rule and every diff kind, as tables."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing_core.errors import MoneyError
from billing_core.reconciliation.diffing import (
    BilledInvoice,
    InvoiceLineRecord,
    InvoiceRecord,
    Tolerance,
    UsageFigure,
    compare_aws,
    compare_invoices,
    compare_usage,
    tally,
)


@pytest.mark.parametrize(
    ("local", "remote", "pct", "within"),
    [
        (10_000, 10_000, "0.5", True),
        (10_000, 10_050, "0.5", True),  # just inside: 50 <= 0.5 % of 10,050 = 50.25
        (10_000, 10_051, "0.5", False),  # just outside: 51 > 50.255
        (10_050, 10_000, "0.5", True),  # symmetric: the larger amount sets the scale
        (10_051, 10_000, "0.5", False),
        (100, 101, "0.5", True),  # one minor unit is always noise
        (100, 102, "0.5", False),  # two are not (0.5 % of 102 is only 0.51)
        (0, 1, "0.5", True),
        (0, 2, "0.5", False),
        (-10_000, -10_050, "0.5", True),  # credits compare by absolute size
        (-10_000, -10_051, "0.5", False),
        (10_000, 10_001, "0", True),  # tolerance 0 still allows one minor unit
        (10_000, 10_002, "0", False),
        (1_000_000, 1_010_000, "1", True),  # other percentages
        (1_000_000, 1_010_102, "1", False),
    ],
)
def test_tolerance_boundaries(local: int, remote: int, pct: str, within: bool) -> None:
    assert Tolerance(Decimal(pct)).within(local, remote) is within


def test_tolerance_refuses_negative() -> None:
    with pytest.raises(MoneyError):
        Tolerance(Decimal("-1"))


def rec(
    local_id: int | None = 1,
    stripe_id: str | None = "in_1",
    *,
    customer: str | None = "cus_1",
    currency: str = "EUR",
    total: int = 10_000,
    status: str = "paid",
    lines: tuple[tuple[str, int], ...] | None = (("Base fee", 10_000),),
    deleted: bool = False,
) -> InvoiceRecord:
    return InvoiceRecord(
        local_id=local_id,
        stripe_id=stripe_id,
        stripe_customer=customer,
        currency=currency,
        total_minor=total,
        status=status,
        customer_id=7,
        lines=None if lines is None else tuple(InvoiceLineRecord(d, a) for d, a in lines),
        customer_deleted=deleted,
    )


LOCAL = rec()
T = Tolerance()


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ([rec()], []),
        ([], [("missing_in_stripe", "invoice:1", False)]),
        (
            [rec(), rec(None, "in_x", lines=None)],
            [("missing_locally", "stripe:in_x", False)],
        ),
        (
            [rec(total=10_100, lines=(("Base fee", 10_100),))],
            [("amount", "invoice:1", False), ("line", "invoice:1:line:Base fee", False)],
        ),
        (
            [rec(total=10_001, lines=(("Base fee", 10_001),))],
            [("amount", "invoice:1", True), ("line", "invoice:1:line:Base fee", True)],
        ),
        ([rec(currency="USD")], [("currency", "invoice:1", False)]),
        ([rec(currency="XYZ")], [("currency", "invoice:1", False)]),
        ([rec(status="open")], [("status", "invoice:1", False)]),
        ([rec(customer="cus_2")], [("customer", "invoice:1", False)]),
        ([rec(deleted=True)], [("customer", "invoice:1", False)]),
        (
            [rec(lines=(("Base fee", 9_000), ("EC2", 1_000)))],
            [
                ("line", "invoice:1:line:Base fee", False),
                ("line", "invoice:1:line:EC2", False),
            ],
        ),
        ([rec(lines=None)], []),  # lines unknown: not compared
        ([rec(None, "in_void", status="void")], [("missing_in_stripe", "invoice:1", False)]),
    ],
)
def test_compare_invoices_kinds(
    remote: list[InvoiceRecord], expected: list[tuple[str, str, bool]]
) -> None:
    found = compare_invoices([LOCAL], remote, T)
    assert [(f.kind, f.subject, f.within_tolerance) for f in found] == expected


def test_delta_is_remote_minus_local() -> None:
    [amount, _line] = compare_invoices(
        [LOCAL], [rec(total=12_000, lines=(("Base fee", 12_000),))], T
    )
    assert amount.delta_minor == 2_000
    assert amount.local_value == "EUR 100.00" and amount.remote_value == "EUR 120.00"


def test_unknown_currency_is_described_not_raised() -> None:
    [found] = compare_invoices([LOCAL], [rec(currency="XYZ")], T)
    assert "unknown currency XYZ" in (found.remote_value or "")


def test_metadata_link_when_local_has_no_stripe_id() -> None:
    local = rec(stripe_id=None, status="draft")
    found = compare_invoices([local], [rec(1, "in_9", status="open")], T)
    assert [(f.kind, f.remote_value) for f in found] == [("status", "open (in_9)")]
    assert "not linked" in (found[0].local_value or "")


def test_second_stripe_invoice_for_one_local_invoice_is_a_duplicate() -> None:
    found = compare_invoices([LOCAL], [rec(), rec(1, "in_dup")], T)
    assert [f.kind for f in found] == ["missing_locally"]
    assert "duplicate of local invoice #1" in (found[0].remote_value or "")


def test_compare_aws_per_service() -> None:
    billed = {1: BilledInvoice(10, 1, "EUR"), 2: BilledInvoice(11, 2, "USD")}
    invoiced = {(1, "EC2"): 10_000, (1, "S3"): 500, (2, "EC2"): 100}
    latest = {(1, "EC2"): 8_000, (1, "S3"): 501, (1, "Support"): 3_000, (3, "EC2"): 999}
    found = compare_aws(billed, invoiced, latest, T, "2026-10")
    got = {(f.subject, f.delta_minor, f.within_tolerance) for f in found}
    assert got == {
        ("customer:1:service:EC2", -2_000, False),  # a late credit
        ("customer:1:service:S3", 1, True),  # a cent: noise
        ("customer:1:service:Support", 3_000, False),  # a support fee nobody invoiced
        ("customer:2:service:EC2", -100, False),  # restated to nothing
    }  # customer 3 has no billed invoice: not a restatement
    assert {f.invoice_id for f in found} == {10, 11}


def test_compare_usage() -> None:
    billed = {1: BilledInvoice(10, 1, "EUR")}
    charged = {(1, "seats"): UsageFigure(Decimal(2), 600)}
    recorded = {(1, "seats"): UsageFigure(Decimal(3), 900), (1, "gb"): UsageFigure(Decimal(1), 10)}
    found = compare_usage(billed, charged, recorded, T)
    assert [(f.subject, f.delta_minor) for f in found] == [
        ("customer:1:metric:gb", 10),
        ("customer:1:metric:seats", 300),
    ]
    assert compare_usage(billed, charged, charged, T) == []


def test_tally_counts_raised_and_within() -> None:
    found = compare_invoices(
        [LOCAL, rec(2, "in_2")],
        [rec(total=10_001, lines=None), rec(2, "in_2", status="open")],
        T,
    )
    assert tally(found) == {
        "amount": {"raised": 0, "within_tolerance": 1},
        "status": {"raised": 1, "within_tolerance": 0},
    }
