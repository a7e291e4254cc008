"""No table or metric a person reads shows a missing value as "None", "nan", "NaT" or "<NA>".

What a person sees (checked in chromium at 1440x900 against Streamlit 1.67): st.dataframe and
st.data_editor draw every missing cell (None, NaN, NaT, pd.NA, in any column type, links
included) as a grey "None"; checkbox and progress columns draw it as an empty box or bar. A
string such as "None" or "nan" (a Python value put through str()) is drawn as black text
everywhere, st.table and st.metric included. st.table draws a real missing value as an empty
cell, and st.metric draws a value of None as "—".

Every page of the registry is opened as the local admin on the demo world, and again on the demo
world plus records whose optional fields are really empty (a customer without email, Stripe id
or plan; invoices not pushed yet, or open without a due date; a reconciliation difference
without a Stripe side; audit entries without a target or a before), with the customer, invoice
and invoice-run preview views opened too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
from sqlmodel import Session, col, delete, select
from streamlit.testing.v1 import AppTest

from billing_core.costs.rollups import drop_rollups
from billing_core.db import make_engine
from billing_core.models import (
    Alert,
    AuditEntry,
    CostLine,
    CostSnapshot,
    Customer,
    Invoice,
    InvoiceLine,
    InvoiceRun,
    ReconciliationDiff,
    ReconciliationRun,
)
from billing_core.periods import Period, utcnow
from billing_core.states import (
    DiffStatus,
    InvoiceOutcome,
    InvoiceStatus,
    LineKind,
    ReconciliationStatus,
    RunStatus,
)
from pages.common.registry import PAGES
from tests.conftest import ROOT

# A Python or pandas spelling of "no value" as a word inside a cell's text; "null" only as a
# whole cell (inside JSON, as the audit log shows before/after, it is the JSON word).
MISSING_WORD = re.compile(r"(?<![\w-])(None|nan|NaN|NaT)(?![\w-])|<NA>")
MISSING_CELL = {"none", "nan", "nat", "<na>", "null"}
# Column types whose missing cells the grid draws without a word.
SILENT_TYPES = {"checkbox", "progress"}


def _spells_missing(text: str) -> bool:
    return bool(MISSING_WORD.search(text)) or text.strip().lower() in MISSING_CELL


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (list, tuple, dict)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Shown:
    where: str  # page and view
    what: str  # element, table number and column, or metric label
    text: str  # what the cell or metric holds

    def __str__(self) -> str:
        return f"{self.where}: {self.what} shows {self.text!r}"


def _dataframe_cells(at: AppTest, where: str) -> Iterator[Shown]:
    for number, element in enumerate(at.dataframe):
        frame = element.value
        config: dict[str, Any] = json.loads(element.proto.columns or "{}")
        shown = list(element.proto.column_order) or [str(c) for c in frame.columns]
        for column in shown:
            cfg = config.get(column) or {}
            kind = (cfg.get("type_config") or {}).get("type")
            if column not in frame.columns or cfg.get("hidden") or kind in SILENT_TYPES:
                continue
            values = [v for v in frame[column] if not _is_missing(v)]
            if values and all(isinstance(v, bool) for v in values):
                continue  # drawn as checkboxes: a missing one is an empty box
            label = cfg.get("label") or column
            for value in frame[column]:
                if _is_missing(value):
                    yield Shown(where, f"table {number} '{label}'", "None (grey)")
                    break
                if isinstance(value, str) and _spells_missing(value):
                    yield Shown(where, f"table {number} '{label}'", value)
                    break


def missing_shown(at: AppTest, where: str) -> list[Shown]:
    """Every table column and metric of a page that shows a missing-value spelling."""
    found = list(_dataframe_cells(at, where))
    for number, table in enumerate(at.table):
        for column in table.value.columns:
            texts = [v for v in table.value[column] if isinstance(v, str) and _spells_missing(v)]
            if texts:
                found.append(Shown(where, f"st.table {number} '{column}'", texts[0]))
    for metric in at.metric:
        for text in (metric.value, metric.proto.delta):
            if text and _spells_missing(text):
                found.append(Shown(where, f"metric '{metric.label}'", text))
    return found


def _run(path: str, params: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / path), default_timeout=60)
    at.query_params.update(params or {})
    at.run()
    assert not at.exception, f"{path} {params}: {at.exception}"
    return at


def walk_every_page(
    customer: int | None = None, invoices: tuple[str, ...] = ()
) -> tuple[list[Shown], dict[str, AppTest]]:
    """Open every page of the registry (and the customer and invoices detail views asked
    for); the preview of the invoice run is clicked open. Returns what shows a missing value
    and the pages, by view name, so a test can also check that they show data at all."""
    found: list[Shown] = []
    opened: dict[str, AppTest] = {}
    for path, *_ in PAGES:
        at = _run(path)
        opened[path] = at
        found += missing_shown(at, path)
    # The Invoices page builds only its open tab: the other two are opened by their URL.
    for tab in ("Payment methods", "Stripe events"):
        at = _run("pages/invoices.py", {"tab": tab})
        opened[f"invoices tab {tab}"] = at
        found += missing_shown(at, f"invoices tab {tab}")
    run_page = opened["pages/invoice_run.py"]
    next(b for b in run_page.button if b.label == "Preview").click().run()
    assert not run_page.exception, run_page.exception
    opened["preview"] = run_page
    found += missing_shown(run_page, "invoice run preview")
    if customer is not None:
        at = _run("pages/customer.py", {"customer": str(customer)})
        opened["customer"] = at
        found += missing_shown(at, f"customer {customer}")
    for invoice in invoices:
        at = _run("pages/invoices.py", {"invoice": invoice})
        opened[f"invoice {invoice}"] = at
        found += missing_shown(at, f"invoice {invoice}")
    return found, opened


# ------------------------------------------------------------------------------ the sparse world


@dataclass(frozen=True)
class Sparse:
    customer_id: int
    draft_id: int  # not pushed: no number, dates or Stripe ids
    open_number: str  # open, charged automatically, no due date, a failed charge


def add_sparse_records(database_url: str) -> Sparse:
    """Records whose optional fields are empty, added to the demo world: a customer without
    email, Stripe id or plan; its invoice for the last closed month not pushed yet; an open
    invoice of the month before charged automatically (Stripe sets no due date then) whose
    charge failed without a message; a difference for it with no Stripe side; a reconciliation
    run and an invoice run still going; audit entries without a target or a before; a usage
    alert not published yet; and no AWS figures for the last closed month (the invoice run's
    preview month)."""
    now = utcnow()
    last = Period.containing(now).previous()
    before = last.previous()
    engine = make_engine(database_url)
    with Session(engine) as s:
        customer = Customer(name="Blank Fields GmbH", email="", currency="EUR")
        s.add(customer)
        s.flush()
        assert customer.id is not None
        draft = Invoice(
            customer_id=customer.id,
            period=str(last),
            currency="EUR",
            status=InvoiceStatus.DRAFT,
            subtotal_minor=12_345,
            total_minor=12_345,
        )
        opened = Invoice(
            customer_id=customer.id,
            period=str(before),
            currency="EUR",
            status=InvoiceStatus.OPEN,
            outcome=InvoiceOutcome.PAYMENT_FAILED,
            number="BLANK-0001",
            stripe_invoice_id="in_blank_fields_0001",
            subtotal_minor=67_890,
            total_minor=67_890,
            attempt_count=1,
            issued_at=now - timedelta(days=20),
        )
        s.add_all([draft, opened])
        s.flush()
        assert draft.id is not None and opened.id is not None
        s.add(
            InvoiceLine(
                invoice_id=draft.id,
                kind=LineKind.BASE_FEE,
                description="Base fee",
                unit_amount=Decimal("123.45"),
                amount_minor=12_345,
            )
        )
        run = ReconciliationRun(period=str(before), status=ReconciliationStatus.RUNNING)
        s.add(run)
        s.flush()
        s.add(
            ReconciliationDiff(
                run_id=run.id,
                period=str(before),
                kind="missing_in_stripe",
                subject=f"invoice:{opened.id}",
                customer_id=customer.id,
                invoice_id=opened.id,
                local_value="EUR 678.90",
                status=DiffStatus.OPEN,
                first_seen_at=now - timedelta(days=3),
                last_seen_at=now - timedelta(days=3),
            )
        )
        s.add(InvoiceRun(period=str(last.shift(-3)), status=RunStatus.RUNNING, trigger="button"))
        # An alert of the usage page's month that no one has published yet.
        on_plan = s.exec(select(Customer).where(col(Customer.plan_id).is_not(None))).first()
        assert on_plan is not None and on_plan.id is not None
        s.add(
            Alert(
                customer_id=on_plan.id,
                metric="api_calls",
                threshold_pct=80,
                period=str(Period.containing(now)),
                value=Decimal(800),
                limit=Decimal(1000),
                message="api_calls at 80% of the plan",
                created_at=now - timedelta(hours=3),
            )
        )
        # The invoice run's month without AWS figures: its preview has no as-of time.
        gone = [
            i for i in s.exec(select(CostSnapshot.id).where(CostSnapshot.period == str(last))) if i
        ]
        drop_rollups(s, gone)
        s.exec(delete(CostLine).where(col(CostLine.snapshot_id).in_(gone)))  # type: ignore[call-overload]
        s.exec(delete(CostSnapshot).where(col(CostSnapshot.id).in_(gone)))  # type: ignore[call-overload]
        s.add_all(
            [
                AuditEntry(
                    actor="admin@example.com",
                    action="customer.plan.assign",
                    target="",
                    before=None,
                    after={"plan": None, "email": None},
                    at=now - timedelta(hours=2),
                ),
                AuditEntry(
                    actor="admin@example.com",
                    action="customer.create",
                    target=f"customer:{customer.id}",
                    before={"email": None, "plan": None},
                    after={"email": "", "plan": "studio"},
                    at=now - timedelta(hours=1),
                ),
            ]
        )
        s.commit()
        sparse = Sparse(customer.id, draft.id, "BLANK-0001")
    engine.dispose()
    return sparse


# ------------------------------------------------------------------------------ tests


def _demo_detail_ids(database_url: str) -> tuple[int, str]:
    engine = make_engine(database_url)
    with Session(engine) as s:
        customer = s.exec(select(Customer).order_by(Customer.id)).first()  # type: ignore[arg-type]
        invoice = s.exec(
            select(Invoice).where(Invoice.status == InvoiceStatus.OPEN).order_by(Invoice.id)  # type: ignore[arg-type]
        ).first()
    engine.dispose()
    assert customer is not None and invoice is not None and invoice.number
    return int(customer.id or 0), invoice.number


def test_the_demo_world_shows_no_missing_value_word(app_env: dict[str, str]) -> None:
    customer, invoice = _demo_detail_ids(app_env["DATABASE_URL"])
    found, opened = walk_every_page(customer, (invoice,))
    assert len(opened["pages/overview.py"].dataframe) > 0
    assert opened[f"invoice {invoice}"].markdown  # the detail opened
    assert not found, "\n".join(map(str, found))


def test_empty_optional_fields_read_blank(app_env: dict[str, str]) -> None:
    sparse = add_sparse_records(app_env["DATABASE_URL"])
    found, opened = walk_every_page(sparse.customer_id, (str(sparse.draft_id), sparse.open_number))
    # The records are on screen: otherwise an empty list would prove nothing.
    customers = next(d.value for d in opened["pages/customers.py"].dataframe)
    assert "Blank Fields GmbH" in set(customers["customer"])
    assert any(
        "Blank Fields GmbH" in str(v)
        for d in opened["pages/collections.py"].dataframe
        for v in d.value.get("customer", [])
    )
    diffs = opened["pages/reconciliation.py"].dataframe
    assert any(
        "Blank Fields GmbH" in set(d.value.get("customer", pd.Series(dtype=str))) for d in diffs
    )
    alerts = opened["pages/usage.py"].dataframe[-1].value
    assert "api_calls at 80% of the plan" in set(alerts["Message"])
    preview = opened["preview"]
    assert any("No AWS costs to bill" in w.value for w in preview.warning)
    assert any("costs as of" in d.value.columns for d in preview.dataframe)
    assert any(
        "Local invoice" in m.value or "BLANK-0001" in m.value
        for k, at in opened.items()
        if k.startswith("invoice ")
        for m in at.markdown
    )
    # Its profile says what is missing rather than ending on an empty "Email:".
    profile = " ".join(m.value for m in opened["customer"].markdown)
    assert "**Email:** none on file" in profile and "**Stripe:** not in Stripe yet" in profile
    assert not found, "\n".join(map(str, found))


def _grid_of_missing_values() -> None:
    import datetime as dt

    import pandas as pd
    import streamlit as st

    st.dataframe(
        pd.DataFrame(
            {
                "text": ["a", None],
                "number": [1.5, float("nan")],
                "count": pd.array([1, None], dtype="Int64"),
                "when": [dt.datetime(2026, 11, 1), None],
                "link": ["https://example.com", None],
                "blank": ["a", ""],
                "word": ["a", "nan"],
                "done": [True, None],
                "share": [0.5, None],
            }
        ),
        column_config={
            "link": st.column_config.LinkColumn("Link", display_text="Open"),
            "share": st.column_config.ProgressColumn("Share"),
        },
    )
    st.table(pd.DataFrame({"empty": ["a", None], "said": ["a", "None"]}))
    st.metric("Nothing", None)
    st.metric("Said", "NaT")


def test_the_check_sees_what_the_grid_draws_as_none() -> None:
    at = AppTest.from_function(_grid_of_missing_values).run()
    assert not at.exception
    found = {s.what: s.text for s in missing_shown(at, "probe")}
    assert found == {
        "table 0 'text'": "None (grey)",
        "table 0 'number'": "None (grey)",
        "table 0 'count'": "None (grey)",
        "table 0 'when'": "None (grey)",
        "table 0 'Link'": "None (grey)",
        "table 0 'word'": "nan",
        "st.table 0 'said'": "None",
        "metric 'Said'": "NaT",
    }  # blank text, a checkbox, a progress bar, st.table's None and a None metric ("—") pass


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("None", True),
        ("nan", True),
        ("NaT", True),
        ("<NA>", True),
        ("null", True),
        ("EUR None", True),
        ('{"plan": null}', False),  # JSON's own word, in the audit log
        ("Nonetheless", False),
        ("", False),
        ("—", False),
    ],
)
def test_what_counts_as_a_missing_value_word(text: str, missing: bool) -> None:
    assert _spells_missing(text) is missing
