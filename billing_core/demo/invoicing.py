"""Demo inputs an invoice run needs for the last closed month (the history stops before it).

Exchange rates for that month, and, unless another seeder already stored one, a cost snapshot
of that month built from the same deterministic cost model as the history, so that the demo's
Preview and Run have real work to do.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from billing_core.costs.rollups import write_rollups
from billing_core.demo.catalog import CUSTOMERS, FX_SOURCE, monthly_service_costs, usd_to
from billing_core.models import CostLine, CostSnapshot, ExchangeRate
from billing_core.periods import previous_period


def seed_last_closed_month(session: Session, now: datetime) -> dict[str, int]:
    period = previous_period(now)
    rates = 0
    for cur in sorted({c.currency for c in CUSTOMERS} - {"USD"}):
        exists = session.exec(
            select(ExchangeRate).where(
                ExchangeRate.period == str(period), ExchangeRate.quote == cur
            )
        ).first()
        if exists is None:
            session.add(
                ExchangeRate(
                    period=str(period), quote=cur, rate=usd_to(cur, period), source=FX_SOURCE
                )
            )
            rates += 1
    if session.exec(select(CostSnapshot).where(CostSnapshot.period == str(period))).first():
        return {"run-month exchange rates": rates}
    snapshot = CostSnapshot(
        period=str(period),
        granularity="MONTHLY",
        group_by="LINKED_ACCOUNT",
        metric="UnblendedCost",
        source="demo",
        fetched_at=period.end_at,
    )
    session.add(snapshot)
    session.flush()
    lines = 0
    for spec in CUSTOMERS:
        for service, usd in sorted(monthly_service_costs(spec, period).items()):
            session.add(
                CostLine(
                    snapshot_id=snapshot.id or 0,
                    period=str(period),
                    day=period.start.isoformat(),
                    account_id=spec.accounts[0],
                    service=service,
                    amount=usd,
                    fetched_at=period.end_at,
                )
            )
            lines += 1
    session.flush()
    write_rollups(session, [snapshot.id or 0])  # lines stored by hand: their sums likewise
    return {"run-month exchange rates": rates, "run-month cost lines": lines}
