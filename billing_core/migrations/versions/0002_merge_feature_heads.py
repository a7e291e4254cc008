"""Join the revisions added in parallel (refunds/event links, plan metric aggregation).

Revision ID: 0002
Revises: invoices_1, usage_1
"""

from collections.abc import Sequence

revision: str = "0002"
down_revision: str | Sequence[str] | None = ("invoices_1", "usage_1")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
