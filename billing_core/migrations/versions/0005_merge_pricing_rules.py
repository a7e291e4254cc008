"""Join pricing rules (plan rules, tiers, overrides, discounts) with collections and
corrections, all added in parallel after due_1.

Revision ID: 0005
Revises: 0004, rules_1
"""

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | Sequence[str] | None = ("0004", "rules_1")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
