"""Pages of issue 17: the Customers and plans page shows a plan's rules and edits the basic
ones without losing the rest; the run preview explains how each line is priced."""

from __future__ import annotations

from sqlmodel import Session, select

from billing_core.customers.plan_import import import_plans
from billing_core.customers.plans import plan_spec
from billing_core.db import make_engine
from billing_core.models import Plan
from billing_core.periods import utcnow
from tests.test_customers_page import button, open_page, selectbox
from tests.test_invoice_run_page import _opened
from tests.test_plans_as_code import ADMIN, EXAMPLE


def _studio(url: str) -> Plan:
    with Session(make_engine(url)) as s:
        return s.exec(select(Plan).where(Plan.name == "studio")).one()


def test_page_shows_rules_and_edits_minimum_and_tax_keeping_tiers_and_rules(
    app_env: dict[str, str],
) -> None:
    url = app_env["DATABASE_URL"]
    with Session(make_engine(url)) as s:
        import_plans(s, EXAMPLE, identity=ADMIN, now=utcnow())
        s.commit()
    studio = _studio(url)
    at = open_page()
    selectbox(at, "Plan to edit").set_value(studio.id).run()
    assert not at.exception
    tables = [d.value for d in at.dataframe]
    rules = next(t for t in tables if "applies to" in t.columns)
    effects = dict(zip(rules["applies to"], rules["effect"], strict=True))
    assert effects["service AWS Lambda"] == "10% discount"
    assert effects["service Amazon CloudFront, account 444444444444"] == "at AWS prices"
    assert effects["Tax"] == "keep"
    assert effects["api_calls above 10000000 included"].startswith("graduated: up to 5000000")
    overrides = next(t for t in tables if "override" in t.columns)
    assert "AWS rule for AWS Lambda" in set(overrides["override"])
    next(t for t in at.text_input if t.label == "Monthly minimum spend (empty: none)").set_value(
        "300.00"
    )
    selectbox(at, "AWS tax").set_value("at_cost")
    button(at, "Save plan").click().run()
    assert not at.exception, at.exception
    assert at.success, [e.value for e in at.error]
    saved = _studio(url)
    with Session(make_engine(url)) as s:
        spec = plan_spec(s, saved)
    assert spec.minimum_spend_minor == 30000
    assert dict(spec.adjustments) == {"Refund": "at_cost", "Tax": "at_cost"}
    assert len(spec.rules) == 4  # the rules the form does not change are kept
    tiers = {m.metric: len(m.tiers) for m in spec.metrics}
    assert tiers["api_calls"] == 2 and tiers["clusters"] == 2


def test_preview_explains_each_line(app_env: dict[str, str]) -> None:
    at = _opened()
    at.button[0].click().run()  # Preview
    assert not at.exception
    frame = next(d.value for d in at.dataframe if "rule applied" in d.value.columns)
    assert list(frame.columns) == ["line", "cost at AWS rates", "rule applied", "amount"]
    aws = frame[frame["cost at AWS rates"] != ""]
    assert len(aws) > 1
    assert all(
        r.startswith(("plan rule", "customer override", "at cost"))
        for r in aws["rule applied"][:-1]
    )
    assert frame["amount"].iloc[0].startswith(("EUR ", "USD "))
