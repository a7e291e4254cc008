"""What every command of the command line shares: the lazily opened settings and database,
project errors turned into one line and an exit code, and the period and actor options."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

import click
from sqlalchemy.engine import Engine

from billing_core.config import Settings, load_settings
from billing_core.db import open_database
from billing_core.errors import BillingError, ConfigError
from billing_core.periods import Period

log = logging.getLogger("billing_core.cli")
F = TypeVar("F", bound=Callable[..., Any])


class AppContext:
    """Settings and database, opened on first use so `--help` needs neither."""

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def engine(self) -> Engine:
        from billing_core.demo.guard import refuse_demo_database

        settings = self.settings
        engine = open_database(
            settings.database_url,
            lock_timeout_seconds=settings.database_lock_timeout_seconds,
            create_folder=settings.mode == "demo",
        )
        refuse_demo_database(engine, mode=settings.mode)
        return engine


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


def actor_options(f: F) -> F:
    """`--trigger cli|cron` and `--actor NAME`: who the audit log names for this command.

    cron passes `--trigger cron` (README Crontab), so its actions are recorded as `cron`; an
    operator's as `cli`; `--actor` names someone else.
    """
    f = click.option(
        "--actor", default=None, help="Name recorded in the audit log (default: the trigger)."
    )(f)
    return click.option(
        "--trigger",
        type=click.Choice(["cli", "cron"]),
        default="cli",
        help="Who starts the command; recorded (cron's actions are audited as cron).",
    )(f)


def actor_of(trigger: str, actor: str | None) -> str:
    return actor or trigger


pass_app = click.make_pass_decorator(AppContext, ensure=True)
