"""Join the revisions added in parallel after demo_1: cost source on runs, event retries,
invoice key generations, customer terms, one active run per period, admin versions, payment
failure details on events, bill-to details on invoices.

Revision ID: 0003
Revises: costdata_1, events_1, alerts_1, dated_1, runs_1, admins_1, currency_1, text_1
"""

from collections.abc import Sequence

revision: str = "0003"
down_revision: str | Sequence[str] | None = (
    "costdata_1",
    "events_1",
    "alerts_1",
    "dated_1",
    "runs_1",
    "admins_1",
    "currency_1",
    "text_1",
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
