"""Tables of cost rollups: each snapshot's lines summed, kept in step with the lines.

`costs/rollups.py` writes them in the same transaction as the snapshot's lines and deletes them
with pruned lines; the migration rollup_1 built them for the snapshots stored before. Amounts
are the exact sums of the lines' amounts (the same scaled integers, ExactDecimal(10)).

Re-exported by billing_core.models, so `from billing_core.models import CostRollup` works too.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from billing_core.sqltypes import ExactDecimal

__all__ = ["CostAccountDailyRollup", "CostAccountRollup", "CostDailyRollup", "CostRollup"]


# One row per account or tag value, service, record type and currency: the lines summed over
# their days. What every month figure reads (page totals, invoicing, margin, customer page).
class CostRollup(SQLModel, table=True):
    __table_args__ = (Index("ix_costrollup_snapshot_account", "snapshot_id", "account_id"),)
    id: int | None = Field(default=None, primary_key=True)
    snapshot_id: int = Field(foreign_key="costsnapshot.id")
    account_id: str | None = None
    tag_value: str | None = None
    service: str
    record_type: str
    currency: str
    amount: Decimal = Field(sa_type=ExactDecimal(10))  # exact sum of the lines' amounts
    lines: int  # how many lines it sums


# One row per day, service, record type and currency: the lines summed over accounts and tag
# values. What the daily chart and "the same days of last month" read for the whole account
# or one service.
class CostDailyRollup(SQLModel, table=True):
    __table_args__ = (Index("ix_costdailyrollup_snapshot_day", "snapshot_id", "day"),)
    id: int | None = Field(default=None, primary_key=True)
    snapshot_id: int = Field(foreign_key="costsnapshot.id")
    day: str  # YYYY-MM-DD, as on the lines
    service: str
    record_type: str
    currency: str
    amount: Decimal = Field(sa_type=ExactDecimal(10))
    lines: int


# One row per day, account or tag value and currency: the lines summed over services and record
# types. What the AWS spend per customer and day reads (usage limits, the Customer page).
class CostAccountDailyRollup(SQLModel, table=True):
    __table_args__ = (
        Index("ix_costaccountdailyrollup_snapshot_account", "snapshot_id", "account_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    snapshot_id: int = Field(foreign_key="costsnapshot.id")
    day: str
    account_id: str | None = None
    tag_value: str | None = None
    currency: str
    amount: Decimal = Field(sa_type=ExactDecimal(10))
    lines: int


# One row per account or tag value, record type and currency: CostRollup summed over services.
# What month totals per customer read when no service is needed (the Overview's 13 months).
class CostAccountRollup(SQLModel, table=True):
    __table_args__ = (Index("ix_costaccountrollup_snapshot_account", "snapshot_id", "account_id"),)
    id: int | None = Field(default=None, primary_key=True)
    snapshot_id: int = Field(foreign_key="costsnapshot.id")
    account_id: str | None = None
    tag_value: str | None = None
    record_type: str
    currency: str
    amount: Decimal = Field(sa_type=ExactDecimal(10))
    lines: int
