"""`margin-report`: gross margin per currency for accounting (registered onto the CLI group of
billing_core/cli.py, which imports this module; cli.py stays under its size cap).

The same figures as the Overview page (invoicing/margin.py), exact decimals.
"""

from __future__ import annotations

import click

from billing_core.cli import cli
from billing_core.cli_context import AppContext, parse_period, pass_app, period_option
from billing_core.db import session_scope
from billing_core.periods import Period, previous_period, utcnow


@cli.command("margin-report")
@period_option(
    "Only this month (default: the last month with billed invoices); see also --from/--to."
)
@click.option("--from", "period_from", callback=parse_period, metavar="YYYY-MM")
@click.option("--to", "period_to", callback=parse_period, metavar="YYYY-MM")
@click.option(
    "--by",
    "by",
    type=click.Choice(["month", "customer", "service"]),
    default="month",
    show_default=True,
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV with exact amounts instead of text.")
@pass_app
def margin_report_cmd(
    app: AppContext,
    period: Period | None,
    period_from: Period | None,
    period_to: Period | None,
    by: str,
    as_csv: bool,
) -> None:
    """Gross margin per currency: billed revenue against AWS cost at cost (before markup)."""
    from billing_core.costs.snapshots import CostSource
    from billing_core.invoicing.margin_report import (
        format_margin_report,
        last_billed_period,
        report_periods,
    )

    with session_scope(app.engine) as session:
        closed = previous_period(utcnow())
        if period is None and period_from is None and period_to is None:
            period = last_billed_period(session, closed)
        periods = report_periods(period, period_from, period_to, last=closed)
        text = format_margin_report(
            session,
            CostSource.of(app.settings),
            periods,
            by,  # type: ignore[arg-type]
            as_csv=as_csv,
        )
    click.echo(text, nl=False)
