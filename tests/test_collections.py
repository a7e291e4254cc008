"""Collections (dunning) against the local Stripe server: reminders on the policy's days through
Stripe's invoice `send`, each once however many passes run and however they die; uncollectible
after the policy's days; dry runs change nothing. Time is always passed in, never the clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from billing_core.cli import main
from billing_core.config import load_settings
from billing_core.db import session_scope
from billing_core.errors import ConfigError
from billing_core.models import AuditEntry, CollectionStep, Customer, Invoice, InvoiceLine
from billing_core.payments import collections
from billing_core.payments.dunning import (
    CollectionsPolicy,
    days_past_due,
    describe_step,
    next_step,
)
from billing_core.states import InvoiceStatus
from billing_core.stripe.keys import install_id
from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_world import API_KEY, StripeWorld, make_world

DUE = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
POLICY = CollectionsPolicy.of([-3, 7, 14], 21, 45)
NO_SECRETS = Path("/nonexistent/secrets.toml")


def day(n: int, hours: int = 1) -> datetime:
    """A moment `n` days after the due date (a little later in that day)."""
    return DUE + timedelta(days=n, hours=hours)


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture
def world(server: StripeTestServer, engine) -> StripeWorld:
    return make_world(server, engine)


def open_invoice(
    world: StripeWorld, email: str = "ops@example.com", total: int = 12_345, due: datetime = DUE
) -> int:
    """A send-invoice invoice, open in Stripe and locally, due on `due`."""
    cus = world.server.create_customer_directly(email=email, name=email.split("@")[0])
    remote = world.server.create_invoice_directly(
        cus["id"], total, "eur", due_date=int(due.timestamp())
    )
    with session_scope(world.engine) as s:
        customer = Customer(
            name=email.split("@")[0],
            email=email,
            currency="EUR",
            collection_method="send_invoice",
            stripe_customer_id=cus["id"],
        )
        s.add(customer)
        s.flush()
        invoice = Invoice(
            customer_id=customer.id,
            period="2026-10",
            currency="EUR",
            subtotal_minor=total,
            total_minor=total,
            status="open",
            collection_method="send_invoice",
            stripe_invoice_id=remote["id"],
            number=remote["number"],
            issued_at=due - timedelta(days=30),
            due_at=due,
        )
        s.add(invoice)
        s.flush()
        s.add(InvoiceLine(invoice_id=invoice.id, kind="base_fee", description="Base fee",
                          amount_minor=total))  # fmt: skip
        assert invoice.id is not None
        return invoice.id


def run(world: StripeWorld, now: datetime, **kw) -> collections.CollectionsResult:
    return collections.run_collections(
        world.engine, world.gateway, POLICY, now=now, actor="cron", **kw
    )


def sent(world: StripeWorld) -> list[str]:
    """Stripe invoice ids of every `invoice.sent` event: one per email Stripe sent."""
    return [e["data"]["object"]["id"] for e in world.server.events("invoice.sent")]


def steps(world: StripeWorld) -> list[tuple[str, str]]:
    with Session(world.engine) as s:
        rows = s.exec(select(CollectionStep).order_by(CollectionStep.id)).all()
        return [(r.step, r.status) for r in rows]


# -- the policy (pure) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "done", "expected"),
    [
        (-4, {}, None),
        (-3, {}, "reminder-3"),
        (0, {"reminder-3"}, None),
        (7, {"reminder-3"}, "reminder+7"),
        (7, set(), "reminder+7"),  # late start: the latest due reminder, not a burst
        (13, {"reminder-3", "reminder+7"}, None),
        (14, {"reminder+7"}, "reminder+14"),
        (21, {"reminder+14"}, "final_notice"),
        (44, {"final_notice"}, None),
        (60, set(), "final_notice"),  # never written off without the final notice first
        (60, {"uncollectible"}, None),
    ],
)
def test_next_step_follows_the_policy(days: int, done: set[str], expected: str | None) -> None:
    taken = dict.fromkeys(done, day(-10))
    plan = next_step(POLICY, due_at=DUE, now=day(days), done=taken)
    assert (plan.step if plan else None) == expected


def test_uncollectible_waits_for_the_grace_after_the_final_notice() -> None:
    late_notice = {"final_notice": day(50)}
    assert next_step(POLICY, due_at=DUE, now=day(60), done=late_notice) is None
    plan = next_step(POLICY, due_at=DUE, now=day(74), done=late_notice)
    assert plan is not None and plan.step == "uncollectible"
    on_time = {"final_notice": day(21)}
    plan = next_step(POLICY, due_at=DUE, now=day(45), done=on_time)
    assert plan is not None and plan.step == "uncollectible"


def test_days_past_due_and_names() -> None:
    assert days_past_due(DUE, DUE) == 0
    assert days_past_due(DUE, DUE - timedelta(hours=1)) == 0  # the due date, earlier that day
    assert days_past_due(DUE, DUE - timedelta(hours=10)) == -1
    assert days_past_due(DUE, DUE + timedelta(days=2, hours=15)) == 3
    assert describe_step("reminder-3") == "Reminder 3 days before the due date"
    assert describe_step("reminder+1") == "Reminder 1 day after the due date"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COLLECTIONS_FINAL_NOTICE_DAY": "10"}, "reminder days [14] are not before the final"),
        ({"COLLECTIONS_UNCOLLECTIBLE_AFTER_DAYS": "21"}, "must be later than the final notice"),
        ({"COLLECTIONS_FINAL_NOTICE_DAY": "0"}, "must come after the due date"),
        ({"COLLECTIONS_REMINDER_DAYS": "-3,soon"}, "not a comma-separated list"),
        ({"COLLECTIONS_REMINDER_DAYS": "-400"}, "more than 365 days"),
    ],
)
def test_an_unsound_policy_is_refused_with_a_sentence(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="Invalid settings") as err:
        load_settings(environ=env, secrets_path=NO_SECRETS)
    assert message in str(err.value)


def test_policy_from_the_secrets_file(tmp_path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("COLLECTIONS_REMINDER_DAYS = [-5, 10]\nCOLLECTIONS_FINAL_NOTICE_DAY = 20\n")
    policy = load_settings(environ={}, secrets_path=secrets).collections_policy
    assert (policy.reminder_days, policy.final_notice_day) == ((-5, 10), 20)
    # The environment wins over the file, as for every setting.
    env = {"COLLECTIONS_FINAL_NOTICE_DAY": "30"}
    assert (
        load_settings(environ=env, secrets_path=secrets).collections_policy.final_notice_day == 30
    )


def test_policy_from_settings() -> None:
    env = {"COLLECTIONS_REMINDER_DAYS": "10, -1, 3", "COLLECTIONS_FINAL_NOTICE_DAY": "15"}
    policy = load_settings(environ=env, secrets_path=NO_SECRETS).collections_policy
    assert policy.reminder_days == (-1, 3, 10) and policy.final_notice_day == 15
    assert policy.uncollectible_after_days == 45


# -- passes against the local Stripe server ----------------------------------------------------


def test_reminders_go_out_on_the_policy_days_once_each(world: StripeWorld) -> None:
    invoice_id = open_invoice(world)
    stripe_id = world.local(invoice_id).stripe_invoice_id
    for n in (-5, -4):
        assert run(world, day(n)).planned == []
    assert sent(world) == []
    first = run(world, day(-3))
    assert [o.outcome for o in first.outcomes] == ["sent"] and sent(world) == [stripe_id]
    for n in (-3, -1, 0, 6):  # the same day again, and days with nothing due
        assert run(world, day(n, hours=5)).outcomes == []
    run(world, day(7))
    run(world, day(14))
    run(world, day(21))
    assert sent(world) == [stripe_id] * 4
    assert steps(world) == [
        ("reminder-3", "done"),
        ("reminder+7", "done"),
        ("reminder+14", "done"),
        ("final_notice", "done"),
    ]
    # Every send carried its own step's key from keys.py.
    with Session(world.engine) as s:
        ns = install_id(s)
    keys = [k for _m, p, _s, k in world.server.request_log if p.endswith("/send")]
    assert keys == [
        f"{ns}-inv-{invoice_id}-collect-{step}"
        for step in ("reminder-3", "reminder+7", "reminder+14", "final_notice")
    ]
    with Session(world.engine) as s:
        audits = s.exec(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [a.action for a in audits] == ["invoice.reminder_sent"] * 3 + [
        "invoice.final_notice_sent"
    ]
    assert all(a.actor == "cron" and a.target == f"invoice:{invoice_id}" for a in audits)
    assert audits[0].after["days_past_due"] == -3


def test_run_twice_sends_one_reminder(world: StripeWorld) -> None:
    open_invoice(world)
    run(world, day(7))
    second = run(world, day(7))
    assert len(sent(world)) == 1 and second.planned == [] and second.exit_code == 0


def test_two_concurrent_passes_send_one_reminder_each(world: StripeWorld) -> None:
    ids = [open_invoice(world, f"c{i}@example.com") for i in range(12)]
    world.server.latency = 0.02  # keep both passes in flight together
    barrier = threading.Barrier(2)
    results: list[collections.CollectionsResult] = []

    def one_host(name: str) -> None:
        barrier.wait()
        results.append(run(world, day(7), owner=name, workers=3))

    hosts = [threading.Thread(target=one_host, args=(f"host{i}",)) for i in (1, 2)]
    for host in hosts:
        host.start()
    for host in hosts:
        host.join()
    world.server.latency = 0.0
    assert sorted(sent(world)) == sorted(world.local(i).stripe_invoice_id for i in ids)
    taken = sum(r.count("sent") for r in results)
    assert taken == 12 and all(r.exit_code == 0 for r in results)
    assert steps(world) == [("reminder+7", "done")] * 12


def test_a_crash_between_claim_and_send_is_finished_by_the_next_pass(world: StripeWorld) -> None:
    invoice_id = open_invoice(world)
    with Session(world.engine) as s:
        _n, [action] = collections.plan_collections(s, POLICY, now=day(7))
        key = collections.keys_for(s).collection_step(invoice_id, action.plan.step)
        s.commit()
    # The pass claims the step, then dies before calling Stripe.
    assert collections.claim(world.engine, action, key=key, owner="dead", actor="cron", now=day(7))
    assert steps(world) == [("reminder+7", "claimed")] and sent(world) == []
    # A pass within the claim's lease leaves it alone: the claimer may still be sending.
    assert run(world, day(7) + timedelta(minutes=10)).outcomes == []
    # The next day's pass takes the abandoned claim over and finishes it, once.
    after = run(world, day(8))
    assert [o.outcome for o in after.outcomes] == ["sent"] and len(sent(world)) == 1
    assert steps(world) == [("reminder+7", "done")]
    with Session(world.engine) as s:
        row = s.exec(select(CollectionStep)).one()
        assert row.attempts == 2 and row.idempotency_key == key
    assert run(world, day(9)).outcomes == []


def test_a_crash_after_the_send_replays_instead_of_mailing_twice(world: StripeWorld) -> None:
    open_invoice(world)
    # Stripe sends the mail, then every answer is lost (the first and both retries).
    world.server.drop_response_next(3, path_contains="/send")
    first = run(world, day(7))
    assert first.exit_code == 1 and steps(world) == [("reminder+7", "failed")]
    second = run(world, day(7, hours=3))  # a failed claim is retried at once, same key
    assert [o.outcome for o in second.outcomes] == ["sent"]
    assert len(sent(world)) == 1 and steps(world) == [("reminder+7", "done")]


def test_uncollectible_after_the_policy_days(world: StripeWorld) -> None:
    invoice_id = open_invoice(world)
    stripe_id = world.local(invoice_id).stripe_invoice_id
    run(world, day(21))
    assert run(world, day(44)).outcomes == []
    assert world.server.invoice(stripe_id)["status"] == "open"
    result = run(world, day(45))
    assert [o.outcome for o in result.outcomes] == ["marked"]
    assert world.server.invoice(stripe_id)["status"] == "uncollectible"
    row = world.local(invoice_id)
    assert row.status == "uncollectible" and row.display_status == "uncollectible"
    with Session(world.engine) as s:
        audit = s.exec(
            select(AuditEntry).where(AuditEntry.action == "invoice.marked_uncollectible")
        ).one()
    assert audit.before == {"status": "open"} and audit.after["status"] == "uncollectible"
    assert run(world, day(50)).candidates == 0


def test_an_invoice_paid_meanwhile_is_mirrored_not_chased(world: StripeWorld) -> None:
    invoice_id = open_invoice(world)
    stripe_id = world.local(invoice_id).stripe_invoice_id
    with world.server._lock:  # paid out of band in Stripe; the local mirror has not synced
        world.server._mark_paid(world.server._objects[stripe_id], out_of_band=True)
    result = run(world, day(7))
    assert [o.outcome for o in result.outcomes] == ["not_needed"]
    assert sent(world) == [] and world.local(invoice_id).status == "paid"
    with Session(world.engine) as s:
        assert s.exec(select(AuditEntry)).all() == []


def test_an_invoice_voided_meanwhile_is_mirrored_not_failed(world: StripeWorld) -> None:
    invoice_id = open_invoice(world)
    world.server.void(world.local(invoice_id).stripe_invoice_id)
    result = run(world, day(7))
    assert [o.outcome for o in result.outcomes] == ["not_needed"] and result.exit_code == 0
    assert world.local(invoice_id).status == "void" and sent(world) == []
    assert run(world, day(8)).candidates == 0


def test_dry_run_changes_nothing(world: StripeWorld) -> None:
    open_invoice(world)
    open_invoice(world, "second@example.com")
    calls = world.server.request_count()
    result = collections.run_collections(
        world.engine, None, POLICY, now=day(7), actor="cron", dry_run=True
    )
    assert len(result.planned) == 2 and result.outcomes == []
    assert collections.planned_lines(result.planned)[0].startswith("would take: invoice ")
    assert world.server.request_count() == calls and steps(world) == []
    with Session(world.engine) as s:
        assert s.exec(select(AuditEntry)).all() == []


def test_demo_and_charged_automatically_invoices_are_not_chased(demo_engine, world) -> None:
    result = collections.run_collections(
        demo_engine, world.gateway, POLICY, now=day(60), actor="cron"
    )
    assert result.candidates == 0 and world.server.request_count() == 0
    # Said, so "0 open invoices" is not read as "nothing is open" (the page lists them).
    with Session(demo_engine) as s:
        demo_open = s.exec(
            select(Invoice).where(
                Invoice.status == InvoiceStatus.OPEN, Invoice.collection_method == "send_invoice"
            )
        ).all()
    assert demo_open and result.not_in_stripe == len(demo_open)
    assert f"({len(demo_open)} more open, not in Stripe: demo records" in result.describe()


def test_the_command_for_cron(
    world: StripeWorld, db_url: str, monkeypatch, tmp_path, capsys
) -> None:
    # The command reads the clock: an invoice due years ago has its final notice due whatever
    # today is, and the write-off waits the policy's grace after that notice.
    invoice_id = open_invoice(world, due=datetime(2020, 1, 6, tzinfo=UTC))
    for var in ("STRIPE_WEBHOOK_SECRET", "BILLING_MODE"):
        monkeypatch.delenv(var, raising=False)
    env = {
        "DATABASE_URL": db_url,
        "BILLING_SECRETS_FILE": str(tmp_path / "none.toml"),
        "STRIPE_API_BASE": world.server.url,
        "STRIPE_API_KEY": API_KEY,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["collections", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would take: invoice" in out and "final notice" in out and "nothing was sent" in out
    assert sent(world) == [] and steps(world) == []
    assert main(["collections", "--trigger", "cron"]) == 0
    out = capsys.readouterr().out
    assert "0 reminders and 1 final notices sent" in out
    assert main(["collections", "--trigger", "cron"]) == 0
    assert "0 reminders and 0 final notices sent" in capsys.readouterr().out
    assert len(sent(world)) == 1 and steps(world) == [("final_notice", "done")]
    with Session(world.engine) as s:
        assert s.exec(select(AuditEntry)).one().actor == "cron"
    world.server.fail_next(20, status=500, path_contains="/mark_uncollectible")
    with session_scope(world.engine) as s:  # the final notice went out long ago
        row = s.exec(select(CollectionStep)).one()
        row.done_at = datetime(2020, 2, 1, tzinfo=UTC)
    assert main(["collections"]) == 1
    err = capsys.readouterr().err
    assert f"invoice {world.local(invoice_id).number}" in err and API_KEY not in err


def test_two_cron_hosts_at_once_send_each_notice_once(
    world: StripeWorld, db_url: str, tmp_path
) -> None:
    # Two processes, as two cron hosts would run them, on one database and one Stripe account.
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    ids = [open_invoice(world, f"p{i}@example.com", due=datetime(2020, 1, 6, tzinfo=UTC))
           for i in range(8)]  # fmt: skip
    world.server.latency = 0.02
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
        "DATABASE_URL": db_url,
        "BILLING_SECRETS_FILE": str(tmp_path / "none.toml"),
        "STRIPE_API_BASE": world.server.url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_REQUESTS_PER_SECOND": "1000",
    }
    command = [sys.executable, "-m", "billing_core", "collections", "--trigger", "cron"]
    hosts = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [host.communicate(timeout=120) for host in hosts]
    world.server.latency = 0.0
    assert [host.returncode for host in hosts] == [0, 0], outputs
    assert sorted(sent(world)) == sorted(world.local(i).stripe_invoice_id for i in ids)
    assert steps(world) == [("final_notice", "done")] * 8
    with Session(world.engine) as s:
        assert len(s.exec(select(AuditEntry)).all()) == 8
