from __future__ import annotations

from collections.abc import Iterator

import pytest
import streamlit as st
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from billing_core import audit
from billing_core.db import make_engine
from billing_core.models import Customer, Plan
from tests.conftest import ROOT
from tests.support.stripe_server import StripeTestServer
from tests.test_pages_access import AUTH

PAGE = str(ROOT / "pages/customers.py")


def db(url: str) -> Session:
    return Session(make_engine(url))


def open_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def selectbox(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(s for s in at.selectbox if s.label == label)


def button(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == label)


def test_page_lists_customers_and_plans(app_env: dict[str, str]) -> None:
    at = open_page()
    customers = at.dataframe[0].value
    assert len(customers) == 9
    assert set(customers["plan"]) == {"indie", "studio", "enterprise"}
    assert [t.label for t in at.text_input][:3] == ["Name", "Currency", "Base fee per month"]


def test_viewer_is_refused(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIEWER_EMAILS", "finance@acme.example")
    monkeypatch.setenv("ADMIN_EMAILS", "boss@acme.example")
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.secrets["auth"] = dict(AUTH)
    at.user = {"is_logged_in": True, "email": "finance@acme.example"}
    at.run()
    assert not at.exception
    assert len(at.dataframe) == 0 and not at.text_input
    assert any("for the admin role" in e.value for e in at.error)


def test_assign_plan_from_next_period(app_env: dict[str, str]) -> None:
    url = app_env["DATABASE_URL"]
    with db(url) as s:
        iris = s.exec(select(Customer).where(Customer.email == "finance@irislabs.example")).one()
        enterprise = s.exec(select(Plan).where(Plan.name == "enterprise")).one()
    at = open_page()
    selectbox(at, "Customer").set_value(iris.id)
    selectbox(at, "Plan").set_value(enterprise.id)
    button(at, "Assign plan").click().run()
    assert not at.exception
    assert any("moves to enterprise from" in s.value for s in at.success)
    with db(url) as s:
        changed = s.get(Customer, iris.id)
        assert changed is not None
        assert changed.plan_id == iris.plan_id and changed.next_plan_id == enterprise.id
        entry = audit.entries(s, action="customer.plan_change")[0]
        assert entry.actor == "local-admin"


def test_edit_plan_makes_new_version(app_env: dict[str, str]) -> None:
    url = app_env["DATABASE_URL"]
    with db(url) as s:
        studio = s.exec(select(Plan).where(Plan.name == "studio")).one()
    at = open_page()
    selectbox(at, "Plan to edit").set_value(studio.id).run()
    fee = next(t for t in at.text_input if t.label == "Base fee per month")
    assert fee.value == "99.00"
    fee.set_value("120.00")
    button(at, "Save plan").click().run()
    assert not at.exception
    assert any("new version of studio" in s.value for s in at.success), [e.value for e in at.error]
    with db(url) as s:
        names = {p.name: p for p in s.exec(select(Plan)).all()}
        assert names["studio"].base_fee_minor == 12000
        retired = [p for n, p in names.items() if n.startswith("studio (until ")]
        assert len(retired) == 1 and not retired[0].active


def test_bad_plan_input_is_explained(app_env: dict[str, str]) -> None:
    url = app_env["DATABASE_URL"]
    at = open_page()
    selectbox(at, "Plan to edit").set_value(0).run()
    next(t for t in at.text_input if t.label == "Name").set_value("gold")
    next(t for t in at.text_input if t.label == "Base fee per month").set_value("abc")
    button(at, "Save plan").click().run()
    assert not at.exception
    assert any("not an amount" in e.value for e in at.error)
    with db(url) as s:
        assert s.exec(select(Plan).where(Plan.name == "gold")).first() is None


def _link_in_stripe(url: str, server: StripeTestServer) -> Customer:
    """The first customer linked to a Stripe customer that is then deleted in Stripe."""
    with db(url) as s:
        customer = s.exec(select(Customer).order_by(Customer.name)).first()
        assert customer is not None
        remote = server.create_customer_directly(email=customer.email, name=customer.name)
        customer.stripe_customer_id = remote["id"]
        s.add(customer)
        s.commit()
        s.refresh(customer)
    server.set_customer_deleted(remote["id"])
    return customer


@pytest.fixture
def stripe_env(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[StripeTestServer]:
    with StripeTestServer() as server:
        monkeypatch.setenv("STRIPE_API_BASE", server.url)
        monkeypatch.setenv("STRIPE_API_KEY", "sk_test_customers_page")
        st.cache_resource.clear()
        yield server


def test_repair_a_customer_deleted_in_stripe(
    app_env: dict[str, str], stripe_env: StripeTestServer
) -> None:
    url = app_env["DATABASE_URL"]
    customer = _link_in_stripe(url, stripe_env)
    deleted = customer.stripe_customer_id
    at = open_page()
    selectbox(at, "Customer to repair").select(customer.id)
    # A deleted Stripe customer cannot be linked: a sentence, nothing changes.
    next(r for r in at.radio if r.label == "How").set_value("Link an existing Stripe customer")
    next(t for t in at.text_input if t.label == "Existing Stripe customer id").input(deleted)
    button(at, "Repair Stripe link").click().run()
    assert not at.exception
    assert any("is deleted" in e.value for e in at.error), [e.value for e in at.error]
    next(r for r in at.radio if r.label == "How").set_value("Re-create it in Stripe")
    button(at, "Repair Stripe link").click().run()
    assert not at.exception
    assert any("go to it on the next run" in s.value for s in at.success)
    with db(url) as s:
        row = s.get(Customer, customer.id)
        assert row is not None and row.stripe_customer_id not in (None, deleted)
        assert not stripe_env.customer(row.stripe_customer_id or "").get("deleted")
        entry = audit.entries(s, limit=1)[0]
    assert (entry.action, entry.actor) == ("customer.stripe_relinked", "local-admin")


# ------------------------------------------------------------------ two admins, stale pages

STALE = "was changed by local-admin at"


def text_input(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(t for t in at.text_input if t.label == label)


def fees(url: str) -> dict[str, int]:
    with db(url) as s:
        return {p.name: p.base_fee_minor for p in s.exec(select(Plan)).all()}


def test_second_stale_plan_save_is_refused(app_env: dict[str, str]) -> None:
    url = app_env["DATABASE_URL"]
    before = fees(url)
    with db(url) as s:
        studio = s.exec(select(Plan).where(Plan.name == "studio")).one()
    ana, ben = open_page(), open_page()
    for at in (ana, ben):
        selectbox(at, "Plan to edit").set_value(studio.id).run()
    text_input(ana, "Base fee per month").set_value("499.00")
    button(ana, "Save plan").click().run()
    assert any("new version of studio" in s.value for s in ana.success)
    # Ben's page still shows studio as he opened it; his save is refused, not misapplied.
    text_input(ben, "Base fee per month").set_value("222.00")
    button(ben, "Save plan").click().run()
    assert not ben.exception, ben.exception
    assert any(e.value.startswith(f"This plan {STALE}") for e in ben.error), ben.error
    assert not ben.success
    assert text_input(ben, "Base fee per month").value == "222.00"  # his input is still there
    after = fees(url)
    assert after["studio"] == 49_900 and 22_200 not in after.values()
    assert {n: f for n, f in after.items() if not n.startswith("studio")} == {
        n: f for n, f in before.items() if n != "studio"
    }
    # Reloading shows Ana's change.
    button(ben, "Reload the plan").click().run()
    assert text_input(ben, "Base fee per month").value == "499.00"
    assert not ben.warning


def test_duplicate_new_plan_name_is_a_sentence(app_env: dict[str, str]) -> None:
    ana, ben = open_page(), open_page()
    for at in (ana, ben):
        selectbox(at, "Plan to edit").set_value(0).run()
        text_input(at, "Name").set_value("gold")
    button(ana, "Save plan").click().run()
    assert any("Plan gold created" in s.value for s in ana.success)
    button(ben, "Save plan").click().run()
    assert not ben.exception
    assert any("a plan named 'gold' already exists" in e.value for e in ben.error)
    with db(app_env["DATABASE_URL"]) as s:
        assert len(s.exec(select(Plan).where(Plan.name == "gold")).all()) == 1


def test_second_stale_assignment_is_refused(app_env: dict[str, str]) -> None:
    url = app_env["DATABASE_URL"]
    with db(url) as s:
        iris = s.exec(select(Customer).where(Customer.email == "finance@irislabs.example")).one()
        names = {p.name: p.id for p in s.exec(select(Plan)).all()}
    ana, ben = open_page(), open_page()
    for at, plan in ((ana, "enterprise"), (ben, "indie")):
        selectbox(at, "Customer").set_value(iris.id)
        selectbox(at, "Plan").set_value(names[plan])
    button(ana, "Assign plan").click().run()
    assert any("moves to enterprise" in s.value for s in ana.success)
    button(ben, "Assign plan").click().run()
    assert not ben.exception
    assert any(e.value.startswith(f"{iris.name} {STALE}") for e in ben.error), ben.error
    with db(url) as s:
        changed = s.get(Customer, iris.id)
        assert changed is not None and changed.next_plan_id == names["enterprise"]
        assert len(audit.entries(s, action="customer.plan_change")) == 1
