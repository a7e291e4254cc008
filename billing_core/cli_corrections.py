"""Commands that correct issued invoices: `credit-note`, `void-credit-note`, `void-invoice` and
`resolve-diff` (registered onto the CLI group of billing_core/cli.py, which imports this module;
cli.py stays under its size cap).

Each is safe to run again with the same arguments: the second run finishes what the first
left (a crash, a Stripe outage) or, once done, changes nothing and says so. Audited as the
trigger or `--actor`.
"""

from __future__ import annotations

import sys

import click

from billing_core.cli import cli
from billing_core.cli_context import AppContext, actor_of, actor_options, pass_app
from billing_core.states import CreditNoteReason, CreditSettlement

# --- corrections ---


@cli.command("credit-note")
@click.option("--invoice", "invoice_ref", required=True, help="Invoice number (or #<local id>).")
@click.option("--full", is_flag=True, help="Credit all that is left of the invoice.")
@click.option("--amount", help="Amount in the invoice's currency, e.g. 12.50 (or '12.50 EUR').")
@click.option("--line", type=int, help="Credit this invoice line (1 = the first) by --amount.")
@click.option("--quantity", type=int, help="With --line: credit this many units of the line.")
@click.option("--reason", required=True, type=click.Choice([r.value for r in CreditNoteReason]))
@click.option(
    "--refund",
    "settlement",
    flag_value=CreditSettlement.REFUND.value,
    help="Paid invoice: refund to the payment method.",
)
@click.option(
    "--credit-balance",
    "settlement",
    flag_value=CreditSettlement.CUSTOMER_BALANCE.value,
    help="Paid invoice: credit the customer's Stripe balance (the next invoice uses it).",
)
@click.option(
    "--out-of-band",
    "settlement",
    flag_value=CreditSettlement.OUT_OF_BAND.value,
    help="Paid invoice: settled outside Stripe.",
)
@click.option("--memo", help="Shown on the credit note.")
@click.option("--preview", is_flag=True, help="Show Stripe's preview only; issue nothing.")
@actor_options
@pass_app
def credit_note_cmd(
    app: AppContext,
    invoice_ref: str,
    full: bool,
    amount: str | None,
    line: int | None,
    quantity: int | None,
    reason: str,
    settlement: str | None,
    memo: str | None,
    preview: bool,
    trigger: str,
    actor: str | None,
) -> None:
    """Issue a credit note on a finalized invoice through Stripe (previewed first)."""
    from billing_core.auth import cli_identity
    from billing_core.corrections import credit_notes
    from billing_core.corrections.credit_plan import CreditAsk, Mode
    from billing_core.errors import ValidationError
    from billing_core.stripe.gateway import Gateway

    mode: Mode
    if full and amount is None and line is None and quantity is None:
        mode = "full"
    elif line is not None and not full and (amount is None) != (quantity is None):
        mode = "line"
    elif amount is not None and not full and line is None and quantity is None:
        mode = "amount"
    else:
        raise ValidationError(
            "Say what to credit: --full, --amount X, or --line N with --amount X (or --quantity "
            "Q); one of them."
        )
    ask = CreditAsk(
        invoice=invoice_ref,
        mode=mode,
        reason=reason,
        amount=amount,
        line=line,
        quantity=quantity,
        settlement=settlement,
        memo=memo,
    )
    gateway = Gateway.from_settings(app.settings)
    _plan, text = credit_notes.preview(app.engine, gateway, ask)
    click.echo(f"preview: {text}")
    if preview:
        return
    identity = cli_identity(actor_of(trigger, actor))
    result = credit_notes.issue(app.engine, gateway, identity, ask)
    click.echo(result.message)


@cli.command("void-credit-note")
@click.argument("note_ref", metavar="NUMBER_OR_ID")
@click.option("--yes", is_flag=True, help="Void without asking (scripts and cron need it).")
@actor_options
@pass_app
@click.pass_context
def void_credit_note_cmd(
    ctx: click.Context, app: AppContext, note_ref: str, yes: bool, trigger: str, actor: str | None
) -> None:
    """Void an issued credit note in Stripe (NUMBER_OR_ID: its number, or #<local id>): what it
    took off the invoice is due again, a balance credit is taken back."""
    from billing_core.auth import cli_identity
    from billing_core.corrections import credit_note_void
    from billing_core.errors import ValidationError
    from billing_core.stripe.gateway import Gateway

    identity = cli_identity(actor_of(trigger, actor))
    plan = credit_note_void.plan_void(app.engine, note_ref)
    if not plan.done and not yes:
        if not sys.stdin.isatty():
            raise ValidationError(
                f"{plan.text} A void cannot be undone: add --yes to confirm it. Nothing was sent."
            )
        if not click.confirm(f"{plan.text}\nVoid it in Stripe? This cannot be undone"):
            click.echo(f"Credit note {plan.number} was not voided; nothing was sent.")
            ctx.exit(1)
    gateway = Gateway.from_settings(app.settings)
    result = credit_note_void.void_credit_note(app.engine, gateway, identity, note_ref)
    click.echo(result.message)


@cli.command("void-invoice")
@click.option("--invoice", "invoice_ref", required=True, help="Invoice number (or #<local id>).")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option(
    "--reissue", is_flag=True, help="Draft the month again with today's figures and send it."
)
@actor_options
@pass_app
def void_invoice_cmd(
    app: AppContext, invoice_ref: str, reason: str, reissue: bool, trigger: str, actor: str | None
) -> None:
    """Void an open invoice in Stripe; with --reissue, bill the month again as a new revision."""
    from billing_core.auth import cli_identity
    from billing_core.corrections.void_reissue import void_invoice
    from billing_core.costs.snapshots import CostSource
    from billing_core.invoicing.drafts import SharedCosts
    from billing_core.stripe.gateway import Gateway

    gateway = Gateway.from_settings(app.settings)
    result = void_invoice(
        app.engine,
        gateway,
        cli_identity(actor_of(trigger, actor)),
        invoice_ref,
        reason,
        reissue=reissue,
        source=CostSource.of(app.settings),
        shared=SharedCosts.of(app.settings),
    )
    click.echo(result.message)


@cli.command("resolve-diff")
@click.option("--diff", "diff_id", type=int, required=True, help="Reconciliation difference id.")
@click.option(
    "--action",
    required=True,
    type=click.Choice(["accept", "true_up", "sync", "credit_note", "reissue", "push"]),
    help="What resolves it; the Reconciliation page lists those a difference offers.",
)
@click.option("--note", help="Why (required to accept).")
@click.option(
    "--reason",
    default=CreditNoteReason.ORDER_CHANGE.value,
    show_default=True,
    type=click.Choice([r.value for r in CreditNoteReason]),
    help="With --action credit_note: Stripe's reason.",
)
@click.option("--refund", "settlement", flag_value=CreditSettlement.REFUND.value)
@click.option("--credit-balance", "settlement", flag_value=CreditSettlement.CUSTOMER_BALANCE.value)
@click.option("--out-of-band", "settlement", flag_value=CreditSettlement.OUT_OF_BAND.value)
@actor_options
@pass_app
def resolve_diff_cmd(
    app: AppContext,
    diff_id: int,
    action: str,
    note: str | None,
    reason: str,
    settlement: str | None,
    trigger: str,
    actor: str | None,
) -> None:
    """Resolve a reconciliation difference by acting on it (a repeat changes nothing)."""
    from billing_core.auth import cli_identity
    from billing_core.costs.snapshots import CostSource
    from billing_core.invoicing.drafts import SharedCosts
    from billing_core.reconciliation.act import act_on_diff
    from billing_core.reconciliation.runs import make_reader

    message = act_on_diff(
        app.engine,
        make_reader(app.settings),
        cli_identity(actor_of(trigger, actor)),
        diff_id,
        action,
        note=note,
        reason=reason,
        settlement=settlement,
        source=CostSource.of(app.settings),
        shared=SharedCosts.of(app.settings),
    )
    click.echo(message)
