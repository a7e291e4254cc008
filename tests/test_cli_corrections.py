"""`credit-note`, `void-credit-note` and `void-invoice` from the command line, against the local
Stripe server: the second run with the same arguments changes nothing; every action is audited
as the CLI."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.auth import cli_identity
from billing_core.cli import main
from billing_core.corrections import credit_notes
from billing_core.corrections.credit_plan import CreditAsk
from billing_core.models import AuditEntry, CreditNote, Invoice
from billing_core.states import InvoiceStatus
from tests.support.stripe_server import StripeTestServer
from tests.test_credit_notes import KEY, billed_world, gateway, server, settings_for

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


def _credited(
    engine: Engine,
    server: StripeTestServer,
    invoice: Invoice,
    amount: str,
    settlement: str | None = None,
) -> CreditNote:
    """A credit note issued on `invoice` through Stripe, as an admin would have."""
    ask = CreditAsk(invoice.number or "", "amount", "duplicate", amount, settlement=settlement)
    issued = credit_notes.issue(engine, gateway(server), cli_identity("ana@example.com"), ask)
    with Session(engine) as s:
        note = s.get(CreditNote, issued.credit_note_id)
        assert note is not None and note.number
        return note


def test_void_credit_note_twice_voids_once(
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    invoices = _world(demo_engine, server, demo_db_url, tmp_path)
    inv = invoices[0]
    note = _credited(demo_engine, server, inv, "4.00")
    args = ["void-credit-note", note.number or "", "--yes", "--actor", "ops"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"Credit note {note.number}" in out and "is void" in out and "asks for" in out
    assert main(["void-credit-note", f"#{note.id}", "--yes"]) == 0
    assert "void already" in capsys.readouterr().out
    assert server.request_count("/void", "POST") == 1
    assert server.invoice(inv.stripe_invoice_id or "")["amount_remaining"] == inv.total_minor
    with Session(demo_engine) as s:
        row = s.get(Invoice, inv.id)
        assert row is not None and row.due_minor == inv.total_minor
        actors = s.exec(
            select(AuditEntry.actor).where(AuditEntry.action == "credit_note.void")
        ).all()
        assert actors == ["ops"]


class _Terminal(io.StringIO):
    """Someone at a terminal typing `answer`."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "code"), [("n\n", 1), ("y\n", 0)])
def test_void_credit_note_asks_at_a_terminal(
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    code: int,
) -> None:
    invoices = _world(demo_engine, server, demo_db_url, tmp_path)
    note = _credited(demo_engine, server, invoices[0], "2.00")
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    assert main(["void-credit-note", note.number or ""]) == code
    out = capsys.readouterr().out
    assert "voiding it means" in out and "Void it in Stripe?" in out
    assert ("was not voided; nothing was sent" in out) == (code == 1)
    assert server.request_count("/void", "POST") == (1 if code == 0 else 0)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("NOPE-0001-CN-01", "There is no credit note 'NOPE-0001-CN-01'"),
        ("refunded", "Stripe cannot void a credit note with a refund"),
        ("no --yes", "add --yes to confirm it. Nothing was sent."),
    ],
)
def test_void_credit_note_refused_with_exit_2(
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ref: str,
    message: str,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal, even under pytest -s
    invoices = _world(demo_engine, server, demo_db_url, tmp_path)
    args = ["void-credit-note", ref, "--yes"]
    if ref == "refunded":
        note = _credited(demo_engine, server, invoices[1], "1.00", settlement="refund")
        args = ["void-credit-note", note.number or "", "--yes"]
    elif ref == "no --yes":  # not at a terminal (cron, a script): nothing to ask
        note = _credited(demo_engine, server, invoices[0], "1.00")
        args = ["void-credit-note", note.number or ""]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert server.request_count("/void", "POST") == 0
    with Session(demo_engine) as s:
        assert all(n.status == "issued" for n in s.exec(select(CreditNote)).all())
        assert not s.exec(select(AuditEntry).where(AuditEntry.action == "credit_note.void")).all()
