from sqlmodel import Session, func, select
from streamlit.testing.v1 import AppTest

from billing_core.db import make_engine
from billing_core.models import Invoice, display_status_in
from tests.conftest import ROOT


def test_dashboard_demo_mode_overview(app_env: dict[str, str]) -> None:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    assert not at.exception
    assert any("Demo data" in i.value for i in at.info)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Active customers"] == "9"
    with Session(make_engine(app_env["DATABASE_URL"])) as s:
        open_count = s.exec(
            select(func.count()).select_from(Invoice).where(display_status_in(["open"]))
        ).one()
    assert metrics["Open invoices"] == str(open_count)


def test_broken_database_shows_a_sentence(app_env: dict[str, str], monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "nonsense")
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    assert not at.exception
    assert any("not a valid database URL" in e.value for e in at.error)


def test_roles_without_sign_in_mean_local_use(app_env: dict[str, str], monkeypatch) -> None:
    # Roles alone sign nobody in: without [auth] or a proxy header this is local use, and the
    # page says the roles wait for sign-in (exposed servers are refused, see test_pages_access).
    monkeypatch.setenv("ADMIN_EMAILS", "boss@example.com")
    at = AppTest.from_file(str(ROOT / "pages/overview.py"), default_timeout=60).run()
    assert not at.exception
    notice = next(c.value for c in at.caption if "Local use only" in c.value)
    assert "take effect once sign-in is configured" in notice
