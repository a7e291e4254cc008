"""CLI: export-invoices, sync and webhook-server (in-process, real database and local Stripe)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from billing_core.cli import main
from billing_core.db import make_engine
from billing_core.models import Invoice
from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_world import API_KEY, make_world


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("STRIPE_API_KEY", "STRIPE_API_BASE", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BILLING_SECRETS_FILE", str(tmp_path / "none.toml"))


def test_export_invoices_writes_both_files(
    cli_env, demo_db_url: str, monkeypatch, tmp_path: Path, capsys
) -> None:
    monkeypatch.setenv("DATABASE_URL", demo_db_url)
    out, lines_out = tmp_path / "inv.csv", tmp_path / "lines.csv"
    code = main(
        ["export-invoices", "--period", "2026-09", "--out", str(out), "--lines-out", str(lines_out)]
    )
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 9
    with Session(make_engine(demo_db_url)) as s:
        eur = s.exec(
            select(func.sum(Invoice.total_minor)).where(
                Invoice.period == "2026-09", Invoice.currency == "EUR"
            )
        ).one()
    assert sum(Decimal(r["total"]) for r in rows if r["currency"] == "EUR") == Decimal(eur) / 100
    lines = list(csv.DictReader(lines_out.open()))
    assert sum(Decimal(r["amount"]) for r in lines) == sum(Decimal(r["total"]) for r in rows)
    assert "invoices: 9 rows" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.partial"))


@pytest.mark.parametrize(
    "args",
    [
        ["--status", "bogus"],
        ["--period", "2026-09", "--from", "2026-01"],
        ["--period", "September"],
    ],
)
def test_export_invoices_bad_usage(cli_env, demo_db_url, monkeypatch, tmp_path, args) -> None:
    monkeypatch.setenv("DATABASE_URL", demo_db_url)
    assert main(["export-invoices", "--out", str(tmp_path / "x.csv"), *args]) == 2
    assert not (tmp_path / "x.csv").exists()


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


def test_sync_turns_a_paid_invoice_paid(
    cli_env, server, db_url, engine, monkeypatch, capsys
) -> None:
    world = make_world(server, engine)
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    server.pay_out_of_band(remote["id"])
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("STRIPE_API_BASE", server.url)
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    assert main(["sync"]) == 0
    assert "processed" in capsys.readouterr().out
    assert world.local(local.id).status == "paid"
    server.fail_next(status=500, n=20)
    assert main(["sync"]) == 1
    err = capsys.readouterr().err
    assert "cursor was not moved" in err and API_KEY not in err


def test_sync_exits_1_and_names_events_that_failed_to_apply(
    cli_env, server, db_url, engine, monkeypatch, capsys
) -> None:
    world = make_world(server, engine)
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    server.pay_out_of_band(remote["id"])
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("STRIPE_API_BASE", server.url)
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    server.fail_next(status=500, n=10_000, path_contains=f"/v1/invoices/{remote['id']}")
    try:
        assert main(["sync"]) == 1
        out, err = capsys.readouterr()
        paid = server.events(type="invoice.paid")[-1]["id"]
        assert "failed" in out and f"failed: {paid} invoice.paid (1 attempt(s)" in err
        assert f"reading Stripe invoice {remote['id']}" in err
        # Still failed (its retry is not due yet): still exit 1.
        assert main(["sync"]) == 1
    finally:
        server.clear_faults()
    assert world.local(local.id).status == "open"


def test_sync_and_webhook_server_need_configuration(cli_env, db_url, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["sync"]) == 2
    assert "STRIPE_API_KEY" in capsys.readouterr().err
    assert main(["webhook-server", "--port", "0"]) == 2
    assert "STRIPE_WEBHOOK_SECRET" in capsys.readouterr().err
