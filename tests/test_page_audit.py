from datetime import UTC, datetime

from streamlit.testing.v1 import AppTest

from billing_core import audit
from billing_core.auth import Identity
from billing_core.customers.import_csv import import_customers
from billing_core.db import make_engine, session_scope
from tests.conftest import ROOT


def seed(url: str) -> None:
    engine = make_engine(url)
    with session_scope(engine) as s:
        import_customers(
            s,
            b"name,email,currency,plan,aws_account_ids,cost_tag_value\n"
            b"New Co,new@co.example,USD,enterprise,101010101010,newco\n",
            actor=Identity("boss@acme.example", "admin", "oidc"),
        )
        audit.record(
            s,
            actor="ops@acme.example",
            action="reconcile.resolve",
            target="diff:7",
            before={"resolved": False},
            after={"resolved": True},
            at=datetime(2026, 11, 2, tzinfo=UTC),
        )
    engine.dispose()


def who(at: AppTest):  # type: ignore[no-untyped-def]
    return next(s for s in at.selectbox if s.label == "Who")


def test_empty_log_says_so(app_env: dict[str, str]) -> None:
    at = AppTest.from_file(str(ROOT / "pages/audit.py"), default_timeout=60).run()
    assert not at.exception
    assert any("Nothing has been recorded yet" in i.value for i in at.info)


def test_audit_page_lists_filters_and_details(app_env: dict[str, str]) -> None:
    seed(app_env["DATABASE_URL"])
    at = AppTest.from_file(str(ROOT / "pages/audit.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["action"]) == ["customer.import", "reconcile.resolve"]
    assert list(table["actor"]) == ["boss@acme.example", "ops@acme.example"]
    assert "New Co" in table["after"].iloc[0]
    assert at.get("download_button")[0].proto.label == "Export CSV"

    who(at).set_value("ops@acme.example").run()
    assert list(at.dataframe[0].value["target"]) == ["diff:7"]
    detail = at.table[0].value
    assert list(detail["field"]) == ["resolved"]
    assert (detail["before"].iloc[0], detail["after"].iloc[0]) == ("false", "true")

    who(at).set_value("Everyone").run()
    at.text_input[0].set_value("CUSTOMER:").run()
    assert list(at.dataframe[0].value["action"]) == ["customer.import"]
    at.text_input[0].set_value("nothing-like-this").run()
    assert at.dataframe[0].value.empty
    assert at.get("download_button")[0].proto.disabled


def test_day_filter(app_env: dict[str, str]) -> None:
    seed(app_env["DATABASE_URL"])
    at = AppTest.from_file(str(ROOT / "pages/audit.py"), default_timeout=60).run()
    first = at.date_input[0].value[0]
    at.date_input[0].set_value((first, first)).run()
    assert list(at.dataframe[0].value["target"]) == ["diff:7"]
