"""Idempotency keys: the one builder, always prefixed with this database's install id.

Local ids repeat across databases (a re-seeded demo, staging next to production), so two of
them sharing one Stripe account would otherwise send the same key for their own invoice 1 and
get each other's stored results, or an idempotency error. Every key Stripe sees is spelled here;
the install id also goes into the metadata that lookups match on (see mapping.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from billing_core.models import SyncState

InvoiceStep = Literal["create", "lines", "finalize", "send"]


def install_id(session: Session) -> str:
    """A random id of this database, made once; it prefixes every idempotency key."""
    row = session.get(SyncState, "install_id")
    if row is not None:
        return row.value
    try:
        with session.begin_nested():  # two threads may make it at once: the first one wins
            row = SyncState(name="install_id", value=secrets.token_hex(4))
            session.add(row)
    except IntegrityError:
        row = session.get(SyncState, "install_id")
        if row is None:
            raise
    return row.value


@dataclass(frozen=True)
class Keys:
    """The idempotency keys of one database (`namespace` is its install id)."""

    namespace: str

    def invoice_step(self, invoice_id: int, step: InvoiceStep, generation: int = 0) -> str:
        """One step of the invoice push; the same key on every retry of that step.

        `generation` (Invoice.key_generation) is bumped when the invoice is pushed anew to a
        re-linked Stripe customer; generation 0 spells the keys as they always were.
        """
        return f"{self.namespace}-inv-{invoice_id}{_gen(generation)}-{step}"

    def invoice_pay(self, invoice_id: int, attempt: int, generation: int = 0) -> str:
        """A pay attempt; a new attempt after a decline (Stripe replays a stored decline)."""
        return f"{self.namespace}-inv-{invoice_id}{_gen(generation)}-pay-{attempt}"

    def invoice_retire(self, stripe_invoice_id: str, step: Literal["unlink", "void"]) -> str:
        """Retiring a Stripe invoice left on a deleted customer (see customers/stripe_link)."""
        return f"{self.namespace}-{stripe_invoice_id}-{step}"

    def collection_step(self, invoice_id: int, step: str, generation: int = 0) -> str:
        """A collections step (payments/dunning.py names it): one send or mark per invoice."""
        return f"{self.namespace}-inv-{invoice_id}{_gen(generation)}-collect-{step}"

    def credit_note(self, credit_note_id: int) -> str:
        """Issuing local credit note `credit_note_id` (one Stripe credit note, ever)."""
        return f"{self.namespace}-cn-{credit_note_id}-create"

    def credit_note_void(self, credit_note_id: int) -> str:
        """Voiding local credit note `credit_note_id` in Stripe (one void per note, ever)."""
        return f"{self.namespace}-cn-{credit_note_id}-void"

    def invoice_void(self, invoice_id: int) -> str:
        """Voiding local invoice `invoice_id` in Stripe (void and reissue)."""
        return f"{self.namespace}-inv-{invoice_id}-void"

    def customer_create(self, customer_id: int) -> str:
        return f"{self.namespace}-cus-{customer_id}-create"

    def customer_recreate(self, customer_id: int, replaced: str | None) -> str:
        """Re-creating a customer whose Stripe customer `replaced` was deleted."""
        return f"{self.namespace}-cus-{customer_id}-recreate-{replaced or 'none'}"

    def test_card(self, customer_id: int, step: Literal["attach", "default"]) -> str:
        """Attaching a test card and making it the default (emulators and test mode only)."""
        return f"{self.namespace}-cus-{customer_id}-{step}"

    def setup_link(self, customer_id: int, at: datetime) -> str:
        """A card setup link: a double click within the same second reuses the session."""
        return f"{self.namespace}-cus-{customer_id}-setup-{int(at.timestamp())}"

    def default_payment_method(self, setup_intent_id: str) -> str:
        """Making the card a finished setup saved the customer's default."""
        return f"{self.namespace}-{setup_intent_id}-default-payment-method"


def _gen(generation: int) -> str:
    return f"-g{generation}" if generation else ""


def keys_for(session: Session) -> Keys:
    """The key builder of the database `session` talks to."""
    return Keys(install_id(session))
