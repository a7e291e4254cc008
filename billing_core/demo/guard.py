"""The line between the demo world and real books.

A database seeded by `make run` holds invented customers and invented cost snapshots. Live
mode must never read it: `fetch-costs` would take the demo snapshot for fresh data and an
invoice run would bill the demo customers. Seeding leaves a marker row in the database (older
demo databases get it from a migration that recognises their demo customers), and every live
process refuses a database that carries it, with a sentence (DESIGN.md section 10).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing_core.errors import ConfigError
from billing_core.models import SyncState

#: The SyncState row that says "this database holds the demo world" (value: when seeded).
DEMO_MARKER = "demo_world"


def mark_demo(session: Session, now: datetime) -> None:
    """Record that this database holds the demo world (done by `seed_demo`)."""
    session.merge(SyncState(name=DEMO_MARKER, value=now.isoformat(), updated_at=now))


def holds_demo_data(session: Session) -> bool:
    """True when the database holds the demo world."""
    return session.get(SyncState, DEMO_MARKER) is not None


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
