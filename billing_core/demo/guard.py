"""The line between the demo world and real books.

A database seeded by `make run` holds invented customers (marked `is_demo`) and invented cost
snapshots (source "demo"). Live mode must never read it: `fetch-costs` would take the demo
snapshot for fresh data and an invoice run would bill the demo customers. So every live process
checks the database it opens, and refuses a demo one with a sentence (DESIGN.md section 10).
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.errors import ConfigError
from billing_core.models import CostSnapshot, Customer


def holds_demo_data(session: Session) -> bool:
    """True when the database holds the demo world (or any part of it)."""
    demo_customer = session.exec(select(Customer.id).where(col(Customer.is_demo).is_(True)))
    if demo_customer.first() is not None:
        return True
    demo_costs = session.exec(select(CostSnapshot.id).where(CostSnapshot.source == "demo"))
    return demo_costs.first() is not None


def refuse_demo_database(engine: Engine, *, mode: str) -> None:
    """In live mode, raise ConfigError when `engine`'s database holds demo data."""
    if mode != "live":
        return
    with Session(engine) as session:
        if not holds_demo_data(session):
            return
    raise ConfigError(
        "This database holds the demo world (invented customers and costs), and live mode "
        "refuses it so that demo customers are never billed and invented costs never reported. "
        "Point DATABASE_URL at the live database (in live mode the default is "
        "data/billing.db; the demo's own file is data/demo.db), or set BILLING_MODE=demo."
    )
