"""Reconciliation diffs in words a finance person reads: what differs, on which invoice, for
which customer, and the two values side by side (pure; names are passed in).

Used by the `reconcile` command's list of open diffs, so a cron mail says which diff is open
instead of only how many.
"""

from __future__ import annotations

from dataclasses import dataclass

# Per kind: what differs, and the names of the two sides.
_WHAT: dict[str, tuple[str, str, str]] = {
    "missing_in_stripe": ("not in Stripe", "ours", "Stripe"),
    "missing_locally": ("in Stripe only", "ours", "Stripe"),
    "amount": ("total differs", "ours", "Stripe"),
    "currency": ("currency differs", "ours", "Stripe"),
    "status": ("status differs", "ours", "Stripe"),
    "customer": ("Stripe customer differs", "ours", "Stripe"),
    "line": ("line differs", "ours", "Stripe"),
    "aws_restatement": ("AWS restated", "invoiced", "Cost Explorer now"),
    "usage": ("usage differs", "billed", "recorded"),
}


@dataclass(frozen=True)
class DiffFacts:
    """One diff with the names that make it readable (invoice number, customer name)."""

    kind: str
    subject: str
    local_value: str | None
    remote_value: str | None
    invoice_number: str | None = None
    customer_name: str | None = None


def _detail(kind: str, subject: str) -> str | None:
    """The part of the subject key a person needs: the line, service or metric."""
    for marker in (":line:", ":service:", ":metric:"):
        if marker in subject:
            return subject.split(marker, 1)[1]
    if kind == "missing_locally" and ":" in subject:
        return subject.rsplit(":", 1)[1]  # the Stripe invoice id
    return None


def describe_diff(facts: DiffFacts) -> str:
    """'DEMO-2026-09-0001, Acme Analytics: total differs (ours EUR 2,372.70, Stripe EUR
    2,372.71)'; unknown kinds fall back to the kind's own name."""
    what, local_name, remote_name = _WHAT.get(
        facts.kind, (facts.kind.replace("_", " "), "ours", "theirs")
    )
    detail = _detail(facts.kind, facts.subject)
    if detail:
        what = f"{what}: {detail}"
    who = ", ".join(name for name in (facts.invoice_number, facts.customer_name) if name)
    values = f"{local_name} {facts.local_value or '-'}, {remote_name} {facts.remote_value or '-'}"
    return f"{who or facts.subject}: {what} ({values})"
