import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlmodel import Session, select

from billing_core.cli import main
from billing_core.db import make_engine
from billing_core.models import AuditEntry, Customer

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billing_core", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def base_env(tmp_path: Path, blank_db_url: str) -> dict[str, str]:
    import os

    keep = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")
    }
    return {
        **keep,
        "DATABASE_URL": blank_db_url,
        "BILLING_SECRETS_FILE": str(tmp_path / "none.toml"),
        "BILLING_MODE": "demo",
    }


def test_help_needs_no_database(base_env: dict[str, str]) -> None:
    out = run_cli("--help", env={**base_env, "DATABASE_URL": "broken"})
    assert out.returncode == 0
    assert "seed-demo" in out.stdout and "import-customers" in out.stdout


def test_seed_demo_is_idempotent(base_env: dict[str, str], tmp_path: Path) -> None:
    first = run_cli("seed-demo", env=base_env)
    assert first.returncode == 0, first.stderr
    assert "Demo data seeded" in first.stdout
    second = run_cli("seed-demo", env=base_env)
    assert second.returncode == 0 and "already holds customers" in second.stdout
    with Session(make_engine(base_env["DATABASE_URL"])) as s:
        assert len(s.exec(select(Customer)).all()) == 9


def test_seed_demo_refused_in_live_mode(base_env: dict[str, str]) -> None:
    env = {**base_env, "BILLING_MODE": "live"}
    refused = run_cli("seed-demo", env=env)
    assert refused.returncode == 2 and "live mode" in refused.stderr
    skipped = run_cli("seed-demo", "--only-in-demo", env=env)
    assert skipped.returncode == 0 and "not seeded" in skipped.stdout


@pytest.mark.parametrize(
    ("env_change", "args", "message"),
    [
        ({"DATABASE_URL": "nonsense"}, ["seed-demo"], "not a valid database URL"),
        ({"DATABASE_URL": "sqlite:////proc/nope/x.db"}, ["db-upgrade"], "Set DATABASE_URL"),
        ({"STRIPE_CONCURRENCY": "lots"}, ["show-settings"], "STRIPE_CONCURRENCY"),
        ({}, ["import-customers", "/no/such/file.csv"], "does not exist"),
        ({}, ["no-such-command"], "No such command"),
    ],
)
def test_bad_usage_and_configuration_exit_2(
    base_env: dict[str, str], env_change: dict[str, str], args: list[str], message: str
) -> None:
    out = run_cli(*args, env={**base_env, **env_change})
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_malformed_secrets_file_exit_2(base_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "secrets.toml"
    bad.write_text("x = [unclosed\n")
    out = run_cli("db-upgrade", env={**base_env, "BILLING_SECRETS_FILE": str(bad)})
    assert out.returncode == 2 and "not valid TOML" in out.stderr
    engine = make_engine(base_env["DATABASE_URL"])
    assert inspect(engine).get_table_names() == []  # touched nothing
    engine.dispose()


def test_import_customers_cli(
    base_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in base_env.items():
        monkeypatch.setenv(key, value)
    assert main(["seed-demo"]) == 0
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(
        "name,email,currency,plan,aws_account_ids,cost_tag_value\n"
        "New Co,new@co.example,USD,enterprise,101010101010,newco\n"
    )
    assert main(["import-customers", str(csv_file)]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "name,email,currency,plan,aws_account_ids,cost_tag_value\nX,x@co.example,USD,platinum,,\n"
    )
    assert main(["import-customers", str(bad)]) == 2
    with Session(make_engine(base_env["DATABASE_URL"])) as s:
        assert len(s.exec(select(Customer)).all()) == 10
        # The CLI acts as an admin named "cli" in the audit log.
        (entry,) = s.exec(select(AuditEntry)).all()
        assert (entry.actor, entry.action) == ("cli", "customer.import")
