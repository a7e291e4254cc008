"""Join the revisions added in parallel after due_1: collections steps, credit notes and
invoice revisions (void and reissue).

Revision ID: 0004
Revises: dunning_1, corrections_1
"""

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | Sequence[str] | None = ("dunning_1", "corrections_1")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
