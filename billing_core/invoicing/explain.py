"""How each line of a draft was priced, in words a finance person follows. Pure: no I/O.

The run preview (page and `invoice-run --dry-run`) and the upcoming invoice show, per line, the
cost at AWS rates (AWS lines), the rule applied (the scoped rule, charge model, minimum or
discount) and the result in the invoice currency; adjustments the plan keeps are listed too,
as not billed.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing_core.exchange_rates.convert import COST_CURRENCY
from billing_core.invoicing.pricing import Draft, DraftLine
from billing_core.money import Money, display


@dataclass(frozen=True)
class LineExplanation:
    description: str
    aws_cost: str  # "USD 5.23" at AWS rates, or "" for lines that are not AWS costs
    rule: str
    amount: str  # the line's amount with its currency
    amount_minor: int


def explain_line(line: DraftLine, currency: str) -> LineExplanation:
    cost = "" if line.cost is None else str(Money(line.cost, COST_CURRENCY))
    return LineExplanation(
        line.description,
        cost,
        line.rule,
        display(line.amount_minor, currency),
        line.amount_minor,
    )


def explain(draft: Draft) -> list[LineExplanation]:
    """One explanation per line, then one per adjustment the plan keeps (amount: not billed)."""
    out = [explain_line(line, draft.currency) for line in draft.lines]
    out += [
        LineExplanation(
            f"AWS {kept.record_type}",
            str(Money(kept.usd, COST_CURRENCY)),
            "kept: the plan does not bill this record type (it stays in the margin)",
            "not billed",
            0,
        )
        for kept in draft.kept
    ]
    return out


def explain_text(draft: Draft) -> list[str]:
    """Plain lines for the CLI: '    AWS Lambda, October 2026: EUR 5.75 = USD 5.23 at AWS rates,
    plan rule for all AWS costs: +10% markup'."""
    fx = ""
    if draft.fx_rate is not None:
        fx = f", at {draft.fx_rate.normalize():f} {draft.currency} per USD"
    out = []
    for e in explain(draft):
        parts = [f"{e.aws_cost} at AWS rates" if e.aws_cost else "", e.rule]
        how = ", ".join(x for x in parts if x)
        if e.aws_cost and e.amount_minor:
            how += fx
        out.append(f"    {e.description}: {e.amount}" + (f" = {how}" if how else ""))
    return out
