"""Command line for cron and operators: `python -m billing_core <command>`.

Exit codes (DESIGN.md section 11): 0 success, 1 partial failure, 2 bad usage or
configuration, 3 another run holds the lock. Output is plain log lines, fit for cron mail.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import Engine

from billing_core.config import Settings, load_settings
from billing_core.db import open_database, session_scope
from billing_core.errors import BillingError, ConfigError
from billing_core.periods import Period, previous_period, utcnow

log = logging.getLogger("billing_core.cli")
F = TypeVar("F", bound=Callable[..., Any])


class AppContext:
    """Settings and database, opened on first use so `--help` needs neither."""

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def engine(self) -> Engine:
        settings = self.settings
        return open_database(
            settings.database_url, lock_timeout_seconds=settings.database_lock_timeout_seconds
        )


class BillingGroup(click.Group):
    """Turns project errors into one clear line on stderr and the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BillingError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; a re-run resumes where this one stopped", err=True)
            ctx.exit(130)


def parse_period(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Period | None:
    if value is None:
        return None
    try:
        return Period.parse(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def period_option(help_text: str = "Month as YYYY-MM.") -> Callable[[F], F]:
    return click.option("--period", callback=parse_period, metavar="YYYY-MM", help=help_text)


pass_app = click.make_pass_decorator(AppContext, ensure=True)


@click.group(cls=BillingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug log lines.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Billing jobs: AWS costs, usage, Stripe invoices, reconciliation."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Vendor SDKs log request details (and can echo headers) at DEBUG; keep them quiet.
    for noisy in ("botocore", "boto3", "urllib3", "stripe", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ctx.obj = AppContext()


@cli.command("db-upgrade")
@pass_app
def db_upgrade(app: AppContext) -> None:
    """Create or upgrade the database schema (the dashboard also does this on start)."""
    app.engine  # noqa: B018  (opening the database runs the migrations)
    click.echo("database schema is up to date")


@cli.command("show-settings")
@pass_app
def show_settings(app: AppContext) -> None:
    """Print the effective settings, secrets shown only as set / not set."""
    for key, value in app.settings.safe_summary().items():
        click.echo(f"{key} = {value}")


@cli.command("seed-demo")
@click.option("--only-in-demo", is_flag=True, help="Do nothing (exit 0) in live mode.")
@click.option("--force", is_flag=True, help="Seed even in live mode (an empty database only).")
@pass_app
def seed_demo_cmd(app: AppContext, only_in_demo: bool, force: bool) -> None:
    """Fill an empty database with the demo customers, costs, usage and invoices."""
    from billing_core.demo import seed_demo

    if app.settings.mode == "live" and not force:
        if only_in_demo:
            click.echo("live mode: demo data not seeded")
            return
        raise ConfigError(
            "Refusing to seed demo data in live mode (AWS or Stripe is configured); "
            "set BILLING_MODE=demo or pass --force for an empty database."
        )
    with session_scope(app.engine) as session:
        summary = seed_demo(session, now=utcnow())
    click.echo(summary.describe())


@cli.command("import-customers")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--actor", default="cli", help="Name recorded in the audit log.")
@pass_app
def import_customers_cmd(app: AppContext, file: Path, actor: str) -> None:
    """Create or update customers from a CSV (validated whole before anything is written)."""
    from billing_core.auth import cli_identity
    from billing_core.customers import import_customers

    with session_scope(app.engine) as session:
        result = import_customers(session, file.read_bytes(), actor=cli_identity(actor))
    click.echo(
        f"customers: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )


@cli.command("invoice-run")
@period_option("Month to invoice (default: the last closed month).")
@click.option("--dry-run", is_flag=True, help="Show the drafts and warnings; save nothing.")
@click.option("--customer", "customer_id", type=int, help="Only this customer id.")
@click.option(
    "--pending", is_flag=True, help="Execute run requests recorded by the dashboard's Run button."
)
@click.option(
    "--demo-attach-test-cards",
    is_flag=True,
    help="Give new Stripe customers a test card (local Stripe emulator only).",
)
@click.option("--trigger", type=click.Choice(["cli", "cron"]), default="cli", help="Recorded.")
@click.option("--actor", default="cli", help="Name recorded on the run and in the audit log.")
@pass_app
@click.pass_context
def invoice_run_cmd(
    ctx: click.Context,
    app: AppContext,
    period: Period | None,
    dry_run: bool,
    customer_id: int | None,
    pending: bool,
    demo_attach_test_cards: bool,
    trigger: str,
    actor: str,
) -> None:
    """Bill a closed month: drafts, then push to Stripe (safe to re-run; resumes)."""
    from billing_core import invoicing, run_worker

    if pending:
        results = run_worker.execute_pending(
            app.engine, app.settings, progress=click.echo, attach_test_cards=demo_attach_test_cards
        )
        if not results:
            click.echo("no run requests pending")
        ctx.exit(max((r.exit_code for r in results), default=0))
    now = utcnow()
    opts = invoicing.RunOptions(
        period=period or previous_period(now),
        dry_run=dry_run,
        customer_id=customer_id,
        trigger=trigger,
        actor=actor,
        attach_test_cards=demo_attach_test_cards,
    )
    result = invoicing.run_invoices(app.engine, app.settings, opts, now=now, progress=click.echo)
    if dry_run:
        for line in invoicing.describe_drafts(result.drafts):
            click.echo(line)
        ctx.exit(1 if result.drafts.problems else 0)
    if result.fatal:
        raise ConfigError(result.fatal)
    ctx.exit(result.exit_code)


@cli.command("set-rate")
@period_option("Month the rate applies to.")
@click.option("--currency", required=True, help="Invoice currency, e.g. EUR (per 1 USD).")
@click.option("--rate", required=True, help="Units of CURRENCY per 1 USD, e.g. 0.9213.")
@click.option("--source", required=True, help="Where the rate comes from, e.g. 'ECB 2026-10-31'.")
@click.option("--actor", default="cli", help="Name recorded in the audit log.")
@pass_app
def set_rate_cmd(
    app: AppContext, period: Period | None, currency: str, rate: str, source: str, actor: str
) -> None:
    """Record the USD->CURRENCY exchange rate of a month (used by that month's invoices)."""
    from billing_core.invoicing import set_rate

    if period is None:
        raise ConfigError("Give the month with --period YYYY-MM.")
    with session_scope(app.engine) as session:
        row = set_rate(
            session, period=period, currency=currency, rate=rate, source=source, actor=actor
        )
        click.echo(f"{row.period}: 1 USD = {row.rate.normalize():f} {row.quote} ({row.source})")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of exiting (handy for tests)."""
    try:
        result = cli.main(args=argv, prog_name="python -m billing_core", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except Exception as exc:  # a bug, not bad input: say so, keep the details in the log
        log.debug("unexpected failure", exc_info=True)
        click.echo(
            f"error: unexpected {type(exc).__name__}: {exc}. Nothing after this point ran; "
            "re-run with -v for details and report it.",
            err=True,
        )
        return 1
    # click returns ctx.exit()'s code instead of raising when standalone_mode is off.
    return result if isinstance(result, int) else 0
