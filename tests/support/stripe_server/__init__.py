"""A local, stateful Stripe test server for tests and benchmarks.

Pure standard library. It speaks enough of Stripe's v1 HTTP API for the real
stripe-python client to create customers, attach test cards, create, fill,
finalize, pay, send, void and search invoices, open checkout sessions in setup
mode, refund charges, issue, preview and void credit notes, move customer balances and
read events, with Stripe's idempotency rules and
injectable faults (429, 5xx, latency, hangs, dropped responses, rate limits).

Usage::

    with StripeTestServer() as server:
        client = stripe.StripeClient(
            "sk_test_local", base_addresses={"api": server.url}, max_network_retries=2
        )
        ...

Standalone (for the dashboard or a browser test, via ``STRIPE_API_BASE``)::

    python -m tests.support.stripe_server --port 12111

Object shapes follow Stripe's published example objects (stripe-fixtures3.json,
MIT) for API version 2026-10-28.endive; only the fields listed in this package are
produced.

Layout: ``core.py`` (lifecycle, request pipeline, routing) on ``state.py`` (objects, events,
clock, rendering, pagination, search), with ``faults.py``, ``idempotency.py``, ``params.py``
(form encoding, parameter checks, search queries), ``routing.py``, ``transport.py`` (the HTTP
server) and ``common.py`` (errors, ids). One mixin per resource family: ``customers.py``,
``payment_methods.py`` (test cards), ``checkout.py`` (sessions and setup intents),
``invoices.py``, ``invoice_lines.py``, ``payments.py`` (payment intents, charges, refunds),
``credit_notes.py`` (credit notes, customer balance transactions), ``events.py`` (and webhook
delivery), ``web.py`` (hosted pages); ``cli.py`` runs it.
"""

from __future__ import annotations

from .checkout import CheckoutMixin
from .cli import main
from .common import DEFAULT_API_VERSION, JSON, StripeAPIError
from .core import ServerCore
from .credit_notes import CreditNotesMixin
from .customers import CustomersMixin
from .events import EventsMixin
from .invoice_lines import MAX_LINES_PER_INVOICE, InvoiceLinesMixin
from .invoices import EMBEDDED_LINES, InvoicesMixin
from .params import parse_form
from .payment_methods import TEST_CARDS, PaymentMethodsMixin
from .payments import PaymentsMixin
from .web import WebPagesMixin

__all__ = [
    "DEFAULT_API_VERSION",
    "EMBEDDED_LINES",
    "JSON",
    "MAX_LINES_PER_INVOICE",
    "TEST_CARDS",
    "StripeAPIError",
    "StripeTestServer",
    "main",
    "parse_form",
]


class StripeTestServer(
    CustomersMixin,
    PaymentMethodsMixin,
    InvoicesMixin,
    InvoiceLinesMixin,
    PaymentsMixin,
    CreditNotesMixin,
    CheckoutMixin,
    EventsMixin,
    WebPagesMixin,
    ServerCore,
):
    """In-memory Stripe v1 emulator on 127.0.0.1 (thread safe, one lock)."""
