"""`credit-note` and `void-invoice` from the command line, against the local Stripe server:
the second run with the same arguments changes nothing; every action is audited as the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.cli import main
from billing_core.models import AuditEntry, CreditNote, Invoice
from billing_core.states import InvoiceStatus
from tests.support.stripe_server import StripeTestServer
from tests.test_credit_notes import KEY, billed_world, server, settings_for

__all__ = ["server"]


@pytest.fixture(autouse=True)
def _env(
    server: StripeTestServer,
    monkeypatch: pytest.MonkeyPatch,
    demo_db_url: str,
    tmp_path: Path,
) -> None:
    server.reset()
    env = {
        "DATABASE_URL": demo_db_url,
        "BILLING_MODE": "demo",
        "BILLING_SECRETS_FILE": str(tmp_path / "none.toml"),
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": KEY,
        "STRIPE_REQUESTS_PER_SECOND": "1000",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def _world(engine: Engine, server: StripeTestServer, url: str, tmp: Path) -> list[Invoice]:
    return billed_world(engine, server, settings_for(server, url, tmp))


def test_credit_note_twice_issues_once(
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    invoices = _world(demo_engine, server, demo_db_url, tmp_path)
    args = [
        "credit-note", "--invoice", invoices[1].number or "", "--line", "1", "--amount", "1.50",
        "--reason", "order_change", "--refund", "--memo", "Seat removed", "--actor", "ops",
    ]  # fmt: skip
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "preview:" in first and "refunded to the payment method" in first and "issued" in first
    assert main(args) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert len(server.credit_notes()) == 1 and server.refunds()[0]["amount"] == 150
    with Session(demo_engine) as s:
        (note,) = s.exec(select(CreditNote)).all()
        assert (note.amount_minor, note.refund_minor, note.created_by) == (150, 150, "ops")
        audited = s.exec(select(AuditEntry).where(AuditEntry.action == "credit_note.issue")).all()
        assert [a.actor for a in audited] == ["ops"]


def test_preview_only_issues_nothing(
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    invoices = _world(demo_engine, server, demo_db_url, tmp_path)
    args = ["credit-note", "--invoice", invoices[0].number or "", "--full", "--reason", "duplicate"]
    assert main([*args, "--preview"]) == 0
    assert "off the amount due" in capsys.readouterr().out
    assert server.credit_notes() == []


def test_over_credit_is_refused_with_exit_2(
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    invoices = _world(demo_engine, server, demo_db_url, tmp_path)
    args = ["credit-note", "--invoice", invoices[0].number or "", "--amount", "999999"]
    assert main([*args, "--reason", "duplicate"]) == 2
    assert "more than is left to credit" in capsys.readouterr().err
    assert server.request_count("/v1/credit_notes") == 0


def test_void_invoice_with_reissue_twice(
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    invoices = _world(demo_engine, server, demo_db_url, tmp_path)
    inv = invoices[0]
    args = ["void-invoice", "--invoice", inv.number or "", "--reason", "wrong usage", "--reissue"]
    assert main(args) == 0
    assert "reissued as revision 2" in capsys.readouterr().out
    assert main(args) == 0
    assert "nothing changed" in capsys.readouterr().out
    with Session(demo_engine) as s:
        rows = s.exec(
            select(Invoice)
            .where(Invoice.customer_id == inv.customer_id, Invoice.period == inv.period)
            .order_by(col(Invoice.revision))
        ).all()
        assert [(r.revision, r.status) for r in rows] == [
            (1, InvoiceStatus.VOID),
            (2, InvoiceStatus.OPEN),
        ]
        actors = s.exec(select(AuditEntry.actor).where(AuditEntry.action == "invoice.void")).all()
        assert actors == ["cli"]
