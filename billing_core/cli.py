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
from billing_core.periods import Period, utcnow

log = logging.getLogger("billing_core.cli")
F = TypeVar("F", bound=Callable[..., Any])


class AppContext:
    """Settings and database, opened on first use so `--help` needs neither."""

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def engine(self) -> Engine:
        return open_database(self.settings.database_url)


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
