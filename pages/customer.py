"""Customer: one customer at a glance. Profile, this month so far, the upcoming invoice (the
run's own pricing, nothing saved), invoice history, margin over time, lifetime totals.

Viewers and admins see the same page; nothing on it acts. `?customer=<id>` opens a customer.
"""

import pandas as pd
import streamlit as st

from billing_core.invoicing.explain import explain
from billing_core.invoicing.margin import Margin
from billing_core.money import display, round_minor
from billing_core.periods import utcnow
from billing_core.views import customer as cv
from billing_core.views import overview as ov
from billing_core.views.common_text import DAY, blank_missing
from pages.common import ui
from pages.common.links import link

identity = ui.page_setup("Customer")
cfg = ui.settings()
now = utcnow()


def _money(amount: object, currency: str) -> str:
    if isinstance(amount, int):
        return ui.fmt(amount, currency)
    return display(round_minor(amount, currency), currency)  # type: ignore[arg-type]


with ui.stop_on_error(), ui.db() as session:
    choices = cv.customer_choices(session)
if not choices:
    st.info("No customers yet: import them on the Customers and plans page.")
    st.stop()

# --- which customer: ?customer=<id> keeps it in the URL ---------------------------------------
ids = list(choices)
asked = st.query_params.get("customer", "")
valid = asked.isdigit() and int(asked) in choices
# A new session opens the URL's customer; so does a URL that moved under the page (the back
# button, a link from another page); otherwise the person's choice stands.
url_moved = st.session_state.get("_customer_page_url") not in (None, asked)
if "customer_page_id" not in st.session_state or (valid and url_moved):
    st.session_state["customer_page_id"] = int(asked) if valid else ids[0]
chosen: int = st.selectbox(
    "Customer", ids, format_func=lambda cid: choices[cid], key="customer_page_id"
)
st.query_params["customer"] = str(chosen)
st.session_state["_customer_page_url"] = str(chosen)

with ui.stop_on_error(), ui.db() as session:
    view = cv.build_customer_view(session, cfg, chosen, now=now)
p = view.profile
cur = p.currency

# --- profile ----------------------------------------------------------------------------------
st.subheader(p.name + ("" if p.active else " (inactive)"))
c1, c2, c3, c4 = st.columns(4)
plan_text = f"**Plan:** {p.plan or 'none'}" + (f"  \n{p.plan_detail}" if p.plan_detail else "")
if p.next_plan:
    plan_text += f"  \nChanges to **{p.next_plan}** from {p.next_plan_from}"
c1.markdown(plan_text)
c2.markdown(
    f"**Currency:** {cur}  \n**Collection:** "
    + (
        "charged automatically"
        if p.collection_method == "charge_automatically"
        else f"invoice sent, due in {p.days_until_due} days"
    )
)
attribution = []
if p.account_ids:
    attribution.append("AWS accounts " + ", ".join(p.account_ids))
if p.cost_tag_value:
    attribution.append(f"tag value `{p.cost_tag_value}`")
c3.markdown("**AWS costs from:** " + ("; ".join(attribution) or "nothing attributed"))
stripe = p.stripe_customer_id or "not in Stripe yet"
if p.stripe_url:
    stripe = f"[{p.stripe_customer_id}]({p.stripe_url})"
c4.markdown(
    f"**Payment method:** {p.payment_method or 'none on file'}  \n**Stripe:** {stripe}  \n"
    f"**Email:** {p.email or 'none on file'}"
)

# --- this month so far ------------------------------------------------------------------------
st.subheader(f"This month so far ({view.period})")
upcoming = view.upcoming
m1, m2, m3 = st.columns(3)
m1.metric(
    "AWS cost, month to date",
    "–" if view.aws_cost is None else _money(view.aws_cost, "USD"),
    help=f"At cost, before markup; {view.aws_coverage}.",
)
if upcoming.draft is not None:
    m2.metric(
        "Upcoming invoice",
        _money(upcoming.draft.total_minor, upcoming.draft.currency),
        help="What the run would bill if the month ended today.",
    )
link(
    "pages/aws_costs.py", "AWS costs page", {"month": str(view.period), "customer": p.id}, where=m3
)
link("pages/usage.py", "Usage vs plan limits", where=m3)
if view.usage:
    st.dataframe(
        cv.usage_frame(view.usage),
        hide_index=True,
        width="stretch",
        column_config={
            "Used %": st.column_config.ProgressColumn(
                "Used %", min_value=0, max_value=100, format="%.0f%%"
            ),
        },
    )
else:
    st.caption("No usage metrics on this customer's plan.")

# --- upcoming invoice -------------------------------------------------------------------------
st.subheader("Upcoming invoice")
st.caption(
    f"The lines the next run would bill for {upcoming.period} if the month ended today, "
    f"priced by the run's own code. AWS figures: {upcoming.coverage or 'none'}."
)
if upcoming.already_invoiced:
    st.info(f"{upcoming.period} is already invoiced: see the history below.")
elif upcoming.problem:
    st.warning(f"{p.name} cannot be priced for {upcoming.period}: {upcoming.problem}")
elif upcoming.draft is not None:
    draft = upcoming.draft
    # Each line explains itself as the run preview does: cost at AWS rates, rule, result.
    lines = pd.DataFrame(
        [
            {
                "Description": e.description,
                "AWS cost (at AWS rates)": e.aws_cost,
                "Rule applied": e.rule,
                "Amount": e.amount,
            }
            for e in explain(draft)
        ]
    )
    st.dataframe(lines, hide_index=True, width="stretch")
    st.markdown(f"**Total: {_money(draft.total_minor, draft.currency)}**")
    if draft.fx_rate is not None:
        st.caption(
            f"At 1 USD = {draft.fx_rate.normalize():f} {draft.currency} ({draft.fx_source})."
        )
    for warning in draft.warnings:
        st.caption(f"Note: {warning}.")

# The history's dates as text, so an empty one reads blank rather than "None".
HISTORY_DATES = {"due": DAY, "issued": DAY, "paid_at": DAY}

# --- invoice history --------------------------------------------------------------------------
st.subheader("Invoice history")
link("pages/invoices.py", f"Invoices of {p.name}", {"customer": p.id})
if view.history.empty:
    st.caption("No invoices yet.")
else:
    st.dataframe(
        blank_missing(view.history, HISTORY_DATES, counts=["days_past_due"]),
        hide_index=True,
        width="stretch",
        column_order=[
            "number",
            "period",
            "status",
            "total",
            "paid",
            "refunded",
            "due",
            "days_past_due",
            "issued",
            "paid_at",
            "invoice_url",
        ],
        column_config={
            "number": "Number",
            "period": "Period",
            "status": st.column_config.TextColumn("Status", width=150),
            "total": "Total",
            "paid": "Paid",
            "refunded": "Refunded",
            "due": "Due",
            "days_past_due": st.column_config.TextColumn("Days late", alignment="right"),
            "issued": "Issued",
            "paid_at": "Paid on",
            "invoice_url": st.column_config.LinkColumn("Invoice", display_text="Open"),
        },
    )

# --- margin over time and lifetime ------------------------------------------------------------
st.subheader("Margin over time")
st.caption(
    "Billed revenue against AWS cost at cost (before markup), at each invoice's own rate: the "
    "Overview's and `margin-report`'s figures."
)
for currency, rows in view.margin.items():
    billed: list[Margin] = [r for r in rows if r.invoices]
    left, right = st.columns([3, 2])
    left.plotly_chart(
        ov.revenue_figure(rows, currency), width="stretch", key=f"customer_margin_{currency}"
    )
    right.dataframe(
        pd.DataFrame(
            [
                {
                    "Month": r.key,
                    "Billed": _money(r.revenue_minor, currency),
                    "AWS cost": _money(r.cost, currency),
                    "Margin": _money(r.margin, currency),
                    "Margin %": "–" if r.margin_pct is None else f"{r.margin_pct:.1f} %",
                }
                for r in reversed(billed)
            ]
        ),
        hide_index=True,
        width="stretch",
    )
if not view.margin:
    st.caption("Nothing billed in the last 13 months.")

st.subheader("Lifetime")
if not view.lifetime:
    st.caption("Nothing billed yet.")
for currency, fig in view.lifetime.items():
    l1, l2, l3 = st.columns(3)
    l1.metric(f"Billed ({currency})", ui.fmt(fig.billed, currency), help="Issued invoices")
    l2.metric(f"Paid ({currency})", ui.fmt(fig.paid, currency), help="Before refunds")
    l3.metric(f"Outstanding ({currency})", ui.fmt(fig.outstanding, currency))
