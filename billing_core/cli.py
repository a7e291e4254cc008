"""Command line for cron and operators: `python -m billing_core <command>`.

Exit codes (DESIGN.md section 11): 0 success, 1 partial failure, 2 bad usage or
configuration, 3 another run holds the lock. Output is plain log lines, fit for cron mail.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from billing_core.cli_context import (
    AppContext,
    BillingGroup,
    actor_of,
    actor_options,
    parse_period,
    pass_app,
    period_option,
)
from billing_core.db import session_scope
from billing_core.errors import ConfigError
from billing_core.periods import Period, previous_period, utcnow
from billing_core.states import ReconciliationStatus

log = logging.getLogger("billing_core.cli")


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
    from billing_core.customers.import_csv import import_customers, read_file

    data = read_file(file, "customers")
    with session_scope(app.engine) as session:
        result = import_customers(session, data, actor=cli_identity(actor))
    click.echo(
        f"customers: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )


@cli.command("fetch-costs")
@period_option("Month to fetch (default: the running month and the last closed one).")
@click.option("--force", is_flag=True, help="Fetch even if the snapshot is younger than the TTL.")
@pass_app
def fetch_costs_cmd(app: AppContext, period: Period | None, force: bool) -> None:
    """Refresh cost snapshots from AWS Cost Explorer (each request costs USD 0.01)."""
    from billing_core.costs.cost_explorer import USD_PER_REQUEST
    from billing_core.costs.refresh import default_fetch_periods, refresh_period

    now = utcnow()
    periods = [period] if period else default_fetch_periods(now)
    failed = requests = 0
    for wanted in periods:
        with session_scope(app.engine) as session:
            outcome = refresh_period(session, app.settings, wanted, now=now, force=force)
        requests += outcome.request_count
        if outcome.error:
            failed += 1
            click.echo(f"error: {outcome.describe()}", err=True)
        else:
            click.echo(outcome.describe())
            if outcome.forecast_note:
                click.echo(f"warning: no forecast: {outcome.forecast_note}", err=True)
    cost = USD_PER_REQUEST * requests
    log.info("Cost Explorer requests: %d (USD %s)", requests, cost)
    click.echo(f"Cost Explorer requests: {requests} (USD {cost:.2f})")
    if failed:
        click.get_current_context().exit(1)


@cli.command("costs-report")
@period_option("Month to report (default: the running month).")
@click.option(
    "--by",
    "by",
    type=click.Choice(["customer", "service", "day"]),
    default="customer",
    show_default=True,
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV with exact amounts instead of text.")
@pass_app
def costs_report_cmd(app: AppContext, period: Period | None, by: str, as_csv: bool) -> None:
    """Print the AWS costs page's figures for a month, from the stored snapshots only."""
    from billing_core.views.aws_costs_report import format_report

    with session_scope(app.engine) as session:
        text = format_report(
            session,
            app.settings,
            period or Period.containing(utcnow()),
            by,  # type: ignore[arg-type]
            now=utcnow(),
            as_csv=as_csv,
        )
    click.echo(text, nl=False)


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
@actor_options
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
    actor: str | None,
) -> None:
    """Bill a closed month: drafts, then push to Stripe (safe to re-run; resumes)."""
    from billing_core.invoicing import run_worker, runs

    actor = actor_of(trigger, actor)
    if pending:
        results = run_worker.execute_pending(
            app.engine,
            app.settings,
            progress=click.echo,
            attach_test_cards=demo_attach_test_cards,
            actor=actor,
        )
        if not results:
            click.echo("no run requests pending")
        ctx.exit(max((r.exit_code for r in results), default=0))
    now = utcnow()
    opts = runs.RunOptions(
        period=period or previous_period(now),
        dry_run=dry_run,
        customer_id=customer_id,
        trigger=trigger,
        actor=actor,
        attach_test_cards=demo_attach_test_cards,
    )
    result = runs.run_invoices(app.engine, app.settings, opts, now=now, progress=click.echo)
    if dry_run:
        for line in runs.describe_drafts(result.drafts):
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
    from billing_core.exchange_rates.rates import set_rate

    if period is None:
        raise ConfigError("Give the month with --period YYYY-MM.")
    with session_scope(app.engine) as session:
        row = set_rate(
            session, period=period, currency=currency, rate=rate, source=source, actor=actor
        )
        click.echo(f"{row.period}: 1 USD = {row.rate.normalize():f} {row.quote} ({row.source})")


@cli.command("relink-customer")
@click.option("--customer", "customer_id", type=int, required=True, help="Local customer id.")
@click.option("--recreate", is_flag=True, help="Create a new Stripe customer for it.")
@click.option("--stripe-id", help="Link this existing Stripe customer (cus_...) instead.")
@click.option("--actor", default="cli", help="Name recorded in the audit log.")
@pass_app
def relink_customer_cmd(
    app: AppContext, customer_id: int, recreate: bool, stripe_id: str | None, actor: str
) -> None:
    """Repair a customer deleted in Stripe: its unfinished invoices go out on the next run."""
    from billing_core.customers.stripe_link import relink_customer
    from billing_core.errors import ValidationError
    from billing_core.stripe.gateway import Gateway

    if recreate == (stripe_id is not None):
        raise ValidationError("Give either --recreate or --stripe-id cus_..., not both or none.")
    gateway = Gateway.from_settings(app.settings)
    result = relink_customer(
        app.engine,
        gateway,
        customer_id=customer_id,
        stripe_id=stripe_id,
        recreate=recreate,
        actor=actor,
        now=utcnow(),
    )
    click.echo(result.describe())


@cli.command("reconcile")
@period_option("Month to reconcile (default: the previous month).")
@click.option(
    "--tolerance",
    "tolerance_pct",
    type=str,
    default=None,
    help="Percent; default from RECONCILE_TOLERANCE_PCT.",
)
@click.option(
    "--deep-lines", is_flag=True, help="Read every line of every Stripe invoice (slower)."
)
@actor_options
@pass_app
@click.pass_context
def reconcile_cmd(
    ctx: click.Context,
    app: AppContext,
    period: Period | None,
    tolerance_pct: str | None,
    deep_lines: bool,
    trigger: str,
    actor: str | None,
) -> None:
    """Compare local invoices with Stripe, AWS costs and usage; exit 1 if open diffs remain."""
    from billing_core.costs.snapshots import CostSource
    from billing_core.errors import MoneyError
    from billing_core.invoicing.drafts import SharedCosts
    from billing_core.money import to_decimal
    from billing_core.reconciliation.diffing import Tolerance
    from billing_core.reconciliation.runs import make_reader, open_diff_lines, reconcile_period

    period = period or Period.containing(utcnow()).previous()
    try:
        raw = app.settings.reconcile_tolerance_pct if tolerance_pct is None else tolerance_pct
        tolerance = Tolerance(to_decimal(raw))
    except MoneyError as exc:
        raise ConfigError(f"--tolerance: {exc} Give a percentage such as 0.5.") from None
    reader = make_reader(app.settings)
    if reader is None:
        log.warning("Stripe is not configured: local vs Stripe is skipped")
    result = reconcile_period(
        app.engine,
        period,
        tolerance=tolerance,
        source=CostSource.of(app.settings),
        reader=reader,
        actor=actor_of(trigger, actor),
        deep_lines=deep_lines,
        shared=SharedCosts.of(app.settings),
    )
    for line in result.describe():
        click.echo(line, err=result.status != ReconciliationStatus.COMPLETE)
    if result.status == ReconciliationStatus.COMPLETE and result.open_above_tolerance:
        with session_scope(app.engine) as session:
            for line in open_diff_lines(session, str(period)):
                click.echo(f"  open: {line}")
    if result.exit_code:
        ctx.exit(result.exit_code)


@cli.command("sync")
@click.option("--reset", is_flag=True, help="Forget the cursor: read every event Stripe holds.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Try every failed event now, given-up ones included (after fixing the cause).",
)
@actor_options
@pass_app
def sync_cmd(
    app: AppContext, reset: bool, retry_failed: bool, trigger: str, actor: str | None
) -> None:
    """Pull Stripe events since the last processed one and apply them (for cron).

    Retries failed events that are due; exits 1 while any event stays failed."""
    from billing_core.payments.sync import sync
    from billing_core.stripe.gateway import Gateway

    result = sync(
        app.engine,
        Gateway.from_settings(app.settings),
        reset=reset,
        retry_failed=retry_failed,
        actor=actor_of(trigger, actor),
    )
    click.echo(result.describe())
    for failed in result.failed:
        click.echo(failed.describe(), err=True)
    if result.exit_code:
        click.get_current_context().exit(result.exit_code)


@cli.command("webhook-server")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@pass_app
def webhook_server_cmd(app: AppContext, port: int, host: str) -> None:
    """Receive Stripe webhooks: verify the signature, store, answer 2xx, apply."""
    from billing_core.payments.webhook_server import make_server

    try:
        server = make_server(app.engine, app.settings, host, port)
    except OSError as exc:
        raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    bound_port = server.server_address[1]
    click.echo(f"listening for Stripe webhooks on http://{host}:{bound_port}/stripe/webhook")
    try:
        server.serve_forever()  # until SIGTERM or Ctrl-C: requests in flight finish first
    finally:
        server.server_close()


@cli.command("export-invoices")
@period_option("Only this month (YYYY-MM); see also --from/--to.")
@click.option("--from", "period_from", callback=parse_period, metavar="YYYY-MM")
@click.option("--to", "period_to", callback=parse_period, metavar="YYYY-MM")
@click.option("--status", "statuses", multiple=True, help="Only these statuses (repeatable).")
@click.option("--currency", "currencies", multiple=True, help="Only these currencies.")
@click.option("--customer", "customer_ids", multiple=True, type=int, help="Customer id.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="CSV file for one row per invoice ('-' for stdout).",
)
@click.option(
    "--lines-out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write one row per invoice line to this CSV file.",
)
@pass_app
def export_invoices_cmd(
    app: AppContext,
    period: Period | None,
    period_from: Period | None,
    period_to: Period | None,
    statuses: tuple[str, ...],
    currencies: tuple[str, ...],
    customer_ids: tuple[int, ...],
    out: Path,
    lines_out: Path | None,
) -> None:
    """Write the invoices (and optionally their lines) as CSV for accounting."""
    from billing_core.invoicing.export_csv import (
        same_file,
        write_csv_file,
        write_invoices_csv,
        write_lines_csv,
    )
    from billing_core.views.invoices import STATUSES, InvoiceFilter

    unknown = sorted(set(statuses) - set(STATUSES))
    if unknown:
        raise ConfigError(f"Unknown status {', '.join(unknown)}: use {', '.join(STATUSES)}.")
    if period and (period_from or period_to):
        raise ConfigError("Use either --period or --from/--to, not both.")
    if lines_out is not None and same_file(out, lines_out):
        raise ConfigError(
            f"--out and --lines-out both name {out}: the lines would overwrite the invoices. "
            "Give the lines a file of their own."
        )
    low, high = (period, period) if period else (period_from, period_to)
    selection = InvoiceFilter(
        period_from=str(low) if low else None,
        period_to=str(high) if high else None,
        statuses=statuses,
        customer_ids=customer_ids,
        currencies=tuple(c.upper() for c in currencies),
    )
    targets = [(out, write_invoices_csv, "invoices")]
    if lines_out:
        targets.append((lines_out, write_lines_csv, "lines"))
    for target, writer, what in targets:
        with session_scope(app.engine) as session:
            if str(target) == "-":
                summary = writer(session, selection, sys.stdout)
            else:
                summary = write_csv_file(target, writer, session, selection)
        click.echo(f"{what}: {summary.describe()} -> {target}", err=str(target) == "-")


# --- usage and alerts ---------------------------------------------------------------------


@cli.command("import-usage")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--actor", default="cli", help="Name recorded in the audit log.")
@click.option("--source", default="import", help="Source recorded on each usage record.")
@pass_app
def import_usage_cmd(app: AppContext, file: Path, actor: str, source: str) -> None:
    """Import usage from a CSV; any bad row imports nothing, re-importing adds nothing."""
    from billing_core.usage.import_csv import import_usage_csv

    with session_scope(app.engine) as session:
        result = import_usage_csv(session, file, now=utcnow(), actor=actor, source=source)
    click.echo(result.describe())


@cli.command("check-alerts")
@period_option("Only this month (default: every month that can still be invoiced).")
@actor_options
@pass_app
def check_alerts_cmd(
    app: AppContext, period: Period | None, trigger: str, actor: str | None
) -> None:
    """Raise usage and spend alerts (once each) and publish them to SNS_TOPIC_ARN if set."""
    from billing_core.costs.snapshots import CostSource
    from billing_core.customers.plans import apply_due_plan_changes
    from billing_core.usage.alerts import (
        AlertPublishError,
        check_alerts,
        publish_pending,
        sns_client,
    )

    now = utcnow()
    with session_scope(app.engine) as session:
        applied = apply_due_plan_changes(session, now=now, actor=actor_of(trigger, actor))
        new = check_alerts(
            session,
            now=now,
            period=period,
            thresholds=app.settings.alert_thresholds_pct,
            source=CostSource.of(app.settings),
        )
    if applied:
        click.echo(f"plans: {applied} scheduled plan change(s) applied")
    for alert in new:
        click.echo(f"alert: {alert.message}")
    click.echo(f"alerts: {len(new)} new")
    topic = app.settings.sns_topic_arn
    if not topic:
        return
    result = publish_pending(app.engine, topic_arn=topic, client=sns_client(app.settings), now=now)
    click.echo(f"sns: {result.published} published, {len(result.failed)} failed")
    if result.failed:
        raise AlertPublishError(
            "Some alerts were not published to SNS (they are retried on the next run): "
            + "; ".join(result.failed[:5])
        )


# --- collections (dunning) -----------------------------------------------------------------


@cli.command("collections")
@click.option("--dry-run", is_flag=True, help="List the steps due; send and change nothing.")
@actor_options
@pass_app
def collections_cmd(app: AppContext, dry_run: bool, trigger: str, actor: str | None) -> None:
    """Send due payment reminders and final notices through Stripe; mark long-overdue invoices
    uncollectible (COLLECTIONS_* settings). Each step once, also on two hosts; exit 1 if one
    failed (the next run retries it)."""
    from billing_core.payments.collections import planned_lines, run_collections
    from billing_core.stripe.client import concurrency
    from billing_core.stripe.gateway import Gateway

    settings = app.settings
    gateway = None if dry_run and not settings.stripe_enabled else Gateway.from_settings(settings)
    result = run_collections(
        app.engine,
        gateway,
        settings.collections_policy,
        now=utcnow(),
        actor=actor_of(trigger, actor),
        dry_run=dry_run,
        workers=concurrency(settings),
    )
    if dry_run:
        for line in planned_lines(result.planned):
            click.echo(line)
    click.echo(result.describe())
    for failed in result.failed:
        click.echo(f"error: {failed.action.describe()}: {failed.message}", err=True)
    if result.exit_code:
        click.get_current_context().exit(result.exit_code)


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


# Commands in their own modules (corrections, margin, plans as code), registered onto `cli`.
import billing_core.cli_corrections  # noqa: E402
import billing_core.cli_margin  # noqa: E402
import billing_core.cli_plans  # noqa: E402, F401
