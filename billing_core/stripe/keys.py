"""Invoice runs: drafts for a period, then a resumable, idempotent push of each to Stripe.

A run for period P (DESIGN.md section 6):
1. refuses a period that is not closed yet, then takes the run lock for P;
2. prices every active customer that has no invoice for P yet and saves all drafts in one
   transaction (the unique key customer+period refuses a second invoice);
3. pushes every unfinished invoice of P with bounded concurrency under one rate limiter:
   create (auto_advance off, local ids in metadata), add all lines in one call, finalize, then pay
   (charge_automatically) or send (send_invoice). Each call carries an idempotency key made of
   this database's install id, the local invoice id and the step; each step's result is saved
   before the next call, so a killed run resumes where it stopped.

Recovery rules. `push_step` is saved as "creating" before the create call: an invoice found in
that state has no Stripe id but may exist in Stripe, so it is looked up by metadata before a
new create (that keeps a retry safe after Stripe forgot the idempotency key, 24 h later). An
invoice resumed from an earlier attempt in any later step is re-read from Stripe once and its
step taken from Stripe's state, so lines are never added twice. A declined payment bumps
`pay_attempt`, so the next run's pay call gets a new key (Stripe would replay the decline).

Totals that are negative (credits larger than charges) are never sent to Stripe: the invoice
is kept with status "credit" and the amount is carried to the next period as a TrueUp, which
the next run bills as a credit line."""

from __future__ import annotations

import logging
import secrets

from sqlmodel import Session

from billing_core.models import (
    SyncState,
)

log = logging.getLogger(__name__)


def install_id(session: Session) -> str:
    """A random id of this database, made once; it prefixes every idempotency key.

    Without it, two databases (a re-seeded demo, staging next to production) sharing one Stripe
    account would send the same key for their own invoice 1 and get each other's results.
    """
    row = session.get(SyncState, "install_id")
    if row is None:
        row = SyncState(name="install_id", value=secrets.token_hex(4))
        session.add(row)
        session.flush()
    return row.value
