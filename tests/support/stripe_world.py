"""One fixture-friendly "Stripe world": the local Stripe server, a client, linked local rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stripe
from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing_core.config import load_settings
from billing_core.db import session_scope
from billing_core.models import Customer, Invoice, InvoiceLine
from billing_core.stripe.client import make_client
from billing_core.stripe.gateway import Gateway, RetryPolicy
from tests.support.stripe_server import StripeTestServer

API_KEY = "sk_test_invoices_helper"


def settings_for(server: StripeTestServer, tmp_env: dict[str, str] | None = None) -> Any:
    env = {"STRIPE_API_BASE": server.url, "STRIPE_API_KEY": API_KEY, **(tmp_env or {})}
    return load_settings(environ=env, secrets_path=Path("/nonexistent/secrets.toml"))


@dataclass
class StripeWorld:
    server: StripeTestServer
    client: stripe.StripeClient  # for acting in Stripe directly, as a customer or Stripe would
    engine: Engine

    @property
    def gateway(self) -> Gateway:
        """What the code under test calls Stripe through (no rate limit, no backoff sleeps)."""
        return Gateway(
            self.client, requests_per_second=10_000, policy=RetryPolicy(backoff_seconds=0.0)
        )

    def customer(
        self,
        email: str = "ops@example.com",
        card: str | None = "pm_card_visa",
        currency: str = "EUR",
    ) -> Customer:
        """A local customer linked to a new Stripe customer (with a default card)."""
        cus = self.server.create_customer_directly(email=email, name=email.split("@")[0])
        if card:
            self.server.attach_card(cus["id"], card)
        with session_scope(self.engine) as s:
            local = Customer(
                name=email.split("@")[0],
                email=email,
                currency=currency,
                stripe_customer_id=cus["id"],
            )
            s.add(local)
        return local

    def invoice(
        self,
        customer: Customer,
        total: int = 12_345,
        period: str = "2026-10",
        status: str = "draft",
        link: bool = True,
    ) -> tuple[Invoice, dict[str, Any]]:
        """A local invoice and its Stripe twin (created in the server directly)."""
        with session_scope(self.engine) as s:
            local = Invoice(
                customer_id=customer.id,
                period=period,
                currency=customer.currency,
                subtotal_minor=total,
                total_minor=total,
                status="draft",
            )
            s.add(local)
            s.flush()
            s.add(
                InvoiceLine(
                    invoice_id=local.id, kind="base_fee", description="Base fee", amount_minor=total
                )
            )
        remote = self.server.create_invoice_directly(
            customer.stripe_customer_id,
            total,
            customer.currency.lower(),
            {"local_invoice_id": str(local.id), "period": period},
            status=status,
        )
        if link:
            with session_scope(self.engine) as s:
                row = s.get(Invoice, local.id)
                row.stripe_invoice_id = remote["id"]
                row.status = remote["status"]
                s.add(row)
                local = row
        return local, remote

    def local(self, invoice_id: int) -> Invoice:
        with Session(self.engine) as s:
            row = s.get(Invoice, invoice_id)
            assert row is not None
            return row


def make_world(server: StripeTestServer, engine: Engine) -> StripeWorld:
    server.reset()
    return StripeWorld(server, make_client(settings_for(server)), engine)
