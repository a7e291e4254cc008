"""Plans as code: `import-plans` and `export-plans` (registered onto the CLI group of
billing_core/cli.py, which imports this module; cli.py stays under its size cap).

A plans file is checked whole before anything is written; changes apply from the next month,
versioned and audited (customers/plan_import.py).
"""

from __future__ import annotations

from pathlib import Path

import click

from billing_core.cli import cli
from billing_core.cli_context import AppContext, pass_app
from billing_core.db import session_scope
from billing_core.periods import utcnow


@cli.command("import-plans")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--actor", default="cli", help="Name recorded in the audit log.")
@pass_app
def import_plans_cmd(app: AppContext, file: Path, actor: str) -> None:
    """Create or update plans, rules and customer overrides from a YAML plans file (validated
    whole; changes apply from the next month, versioned and audited)."""
    from billing_core.auth import cli_identity
    from billing_core.customers.import_csv import read_file
    from billing_core.customers.plan_import import import_plans

    data = read_file(file, "plans")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise click.UsageError(f"{file} is not UTF-8 text; save it as UTF-8.") from None
    with session_scope(app.engine) as session:
        result = import_plans(session, text, identity=cli_identity(actor), now=utcnow())
    click.echo(result.describe())
    for note in result.notes:
        click.echo(f"note: {note}")


@cli.command("export-plans")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE.")
@pass_app
def export_plans_cmd(app: AppContext, out: Path | None) -> None:
    """Write every active plan and customer override as a plans file (import-plans reads it)."""
    from billing_core.customers.plan_import import export_plans

    with session_scope(app.engine) as session:
        text = export_plans(session, utcnow())
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"plans written to {out}")
