import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlmodel import Session

from billing_core import audit
from billing_core.models import AuditEntry
from tests.support.csv_rows import CRLF, LF, LONE_CR, as_dicts, both_readers, read_back


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 10, day, hour, tzinfo=UTC)


def seed(session: Session) -> None:
    audit.record(
        session,
        actor="boss@acme.example",
        action="customer.import",
        target="customer:1",
        after={"name": "Acme"},
        at=at(1),
    )
    audit.record(
        session,
        actor="boss@acme.example",
        action="invoice.run",
        target="period:2026-09",
        after={"invoices": 9},
        at=at(2, 0),
    )
    audit.record(
        session,
        actor="ops@acme.example",
        action="invoice.retry_payment",
        target="invoice:in_100%_off",
        before={"status": "failed"},
        after={"status": "paid"},
        at=at(2, 23),
    )
    audit.record(
        session,
        actor="ops@acme.example",
        action="reconcile.resolve",
        target="diff:7",
        before={"resolved": False},
        after={"resolved": True},
        at=at(5),
    )
    session.commit()


def targets(found: list[AuditEntry] | object) -> list[str]:
    return [e.target for e in found]  # type: ignore[attr-defined]


def test_filters(session: Session) -> None:
    seed(session)
    assert targets(audit.entries(session)) == [
        "diff:7",
        "invoice:in_100%_off",
        "period:2026-09",
        "customer:1",
    ]
    assert targets(audit.entries(session, actor="ops@acme.example")) == [
        "diff:7",
        "invoice:in_100%_off",
    ]
    assert targets(audit.entries(session, action="invoice.run")) == ["period:2026-09"]
    assert targets(audit.entries(session, target_contains="CUSTOMER")) == ["customer:1"]
    # LIKE wildcards in the text are matched literally.
    assert targets(audit.entries(session, target_contains="100%")) == ["invoice:in_100%_off"]
    assert targets(audit.entries(session, target_contains="%")) == ["invoice:in_100%_off"]
    assert targets(audit.entries(session, target_contains="_")) == ["invoice:in_100%_off"]
    assert len(audit.entries(session, limit=2)) == 2
    assert len(audit.entries(session, limit=None)) == 4


def test_day_range_includes_both_days(session: Session) -> None:
    seed(session)
    one_day = audit.AuditFilter(first_day=date(2026, 10, 2), last_day=date(2026, 10, 2))
    assert targets(one_day.search(session)) == ["invoice:in_100%_off", "period:2026-09"]
    assert targets(audit.AuditFilter(first_day=date(2026, 10, 3)).search(session)) == ["diff:7"]
    assert targets(audit.AuditFilter(last_day=date(2026, 10, 1)).search(session)) == ["customer:1"]
    both = audit.AuditFilter(
        actor="ops@acme.example", action="reconcile.resolve", target_contains="diff"
    )
    assert targets(both.search(session)) == ["diff:7"]


def test_filter_choices(session: Session) -> None:
    empty = audit.filter_choices(session)
    assert empty.actors == [] and empty.first is None
    seed(session)
    choices = audit.filter_choices(session)
    assert choices.actors == ["boss@acme.example", "ops@acme.example"]
    assert choices.actions == [
        "customer.import",
        "invoice.retry_payment",
        "invoice.run",
        "reconcile.resolve",
    ]
    assert (choices.first, choices.last) == (at(1), at(5))


def test_secrets_never_recorded_or_exported(session: Session) -> None:
    audit.record(
        session,
        actor="boss@acme.example",
        action="settings.change",
        target="stripe",
        before={
            "stripe_api_key": "sk_live_old",
            "client_secret": "cs",
            "nested": {"webhook_secret": "whsec_1", "limit": Decimal("1.50")},
        },
        after={"api_key": "sk_live_new", "access_token": "tok"},
    )
    session.commit()
    (entry,) = audit.entries(session)
    assert entry.before == {
        "stripe_api_key": "***",
        "client_secret": "***",
        "nested": {"webhook_secret": "***", "limit": "1.50"},
    }
    assert entry.after == {"api_key": "***", "access_token": "***"}
    # An entry written before a key was known to be secret is masked on export anyway.
    entry.after = {"password": "hunter2"}
    text = audit.to_csv([entry]).decode("utf-8-sig")
    for secret in ("sk_live", "whsec_1", "hunter2", "tok", '"cs"'):
        assert secret not in text


def test_csv_export(session: Session) -> None:
    seed(session)
    audit.record(
        session,
        actor="boss@acme.example",
        action="customer.import",
        target='=HYPERLINK("http://evil.example")',
        after={"name": "-2+3"},
        at=at(6),
    )
    session.commit()
    data = audit.to_csv(audit.entries(session))
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert list(rows[0]) == list(audit.CSV_COLUMNS)
    assert len(rows) == 5
    assert rows[0]["target"].startswith("'=")  # a spreadsheet shows it, never runs it
    assert rows[0]["after"] == '{"name": "-2+3"}'
    resolve = rows[1]
    assert resolve["actor"] == "ops@acme.example"
    assert resolve["at"] == "2026-10-05T12:00:00+00:00"
    assert resolve["before"] == '{"resolved": false}'
    assert audit.to_csv([]).decode("utf-8-sig") == ",".join(audit.CSV_COLUMNS) + "\n"


def test_changes(session: Session) -> None:
    entry = audit.record(
        session,
        actor="a",
        action="plan.change",
        target="customer:1",
        before={"plan": "indie", "currency": "EUR", "old": 1},
        after={"plan": "studio", "currency": "EUR", "new": [1, 2]},
    )
    assert audit.changes(entry) == [
        ("new", "—", "[1, 2]"),
        ("old", "1", "—"),
        ("plan", "indie", "studio"),
    ]
    created = audit.record(session, actor="a", action="x", target="y", after={"a": 1})
    assert audit.changes(created) == [("a", "—", "1")]


def test_audit_export_file_name_says_what_was_filtered() -> None:
    from datetime import date

    assert audit.AuditFilter().file_name() == "audit-log_all.csv"
    picked = audit.AuditFilter(
        actor="boss@acme.example",
        action="invoice_run.request",
        first_day=date(2026, 10, 1),
        last_day=date(2026, 10, 31),
    )
    assert picked.file_name() == (
        "audit-log_2026-10-01-to-2026-10-31_boss-acme.example_invoice-run.request.csv"
    )


def test_table_shows_times_as_every_page_does(session: Session) -> None:
    # The page shows minutes and "UTC" like the run history; the CSV keeps the exact time.
    seed(session)
    found = audit.AuditFilter().search(session, limit=None)
    shown = {r["target"]: r["at"] for r in audit.table_rows(found)}
    assert shown["period:2026-09"] == "2026-10-02 00:00 UTC"
    exported = {r["target"]: r["at"] for r in audit.rows(found)}
    assert exported["period:2026-09"] == "2026-10-02T00:00:00+00:00"


def test_csv_line_breaks_keep_one_entry_per_row(session: Session) -> None:
    texts = (LONE_CR, CRLF, LF)
    for day, text in enumerate(texts, 1):
        audit.record(
            session,
            actor=f"ops{day}@acme.example",
            action="customer.import",
            target=text,
            after={"name": text},
            at=at(day),
        )
    session.commit()
    text = audit.to_csv(audit.entries(session)).decode("utf-8-sig")
    rows = as_dicts(both_readers(text, 3))  # a bare "\r" would split a row for either reader
    assert "\r" not in text
    for row in rows:
        day = int(row["at"][8:10])  # each entry's cells stay under their own headers
        assert row["actor"] == f"ops{day}@acme.example"
        assert row["target"] == read_back(texts[day - 1])
        assert row["action"] == "customer.import"
