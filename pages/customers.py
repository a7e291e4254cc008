"""Customers and plans (admin): plans with their limits and prices, and who is on which plan.

Every change applies from the next period and lands in the audit log.
"""

import streamlit as st

from billing_core import audit
from billing_core.customers import plans
from billing_core.customers.stripe_link import relink_customer
from billing_core.errors import ValidationError
from billing_core.periods import Period, utcnow
from pages.common import ui

identity = ui.page_setup("Customers and plans", "admin")
now = utcnow()
next_period = Period.containing(now).next()


def show_validation(exc: ValidationError) -> None:
    header = str(exc).splitlines()[0]
    st.error(header + "\n\n" + "\n".join(f"- {p}" for p in exc.problems))


with ui.stop_on_error(), ui.db() as session:
    customers = plans.plan_overview(session, now)
    all_plans = plans.all_plans(session)
    details = {p.id: plans.describe_plan(session, p) for p in all_plans}
    history = [
        e
        for e in audit.entries(session, limit=200)
        if e.action.startswith(("plan.", "customer.plan", "customer.stripe"))
    ][:30]

active_plans = [p for p in all_plans if p.active]
plan_names = {p.id: p.name for p in all_plans}

st.subheader("Customers")
st.dataframe(
    customers,
    hide_index=True,
    column_order=[
        "customer",
        "email",
        "currency",
        "plan",
        "next_plan",
        "from",
        "stripe_customer",
        "active",
    ],
    column_config={
        "customer": "Customer",
        "email": "Email",
        "currency": "Currency",
        "plan": "Plan now",
        "next_plan": "Next plan",
        "from": "From",
        "stripe_customer": "Stripe customer",
        "active": st.column_config.CheckboxColumn("Active"),
    },
)

with st.form("assign"):
    st.markdown(f"**Assign a plan** (applies from {next_period})")
    left, right = st.columns(2)
    names = {c["id"]: f"{c['customer']} ({c['plan']})" for c in customers}
    customer_id = left.selectbox("Customer", list(names), format_func=lambda i: names[i])
    plan_id = right.selectbox(
        "Plan", [p.id for p in active_plans], format_func=lambda i: plan_names[i]
    )
    if st.form_submit_button("Assign plan") and customer_id is not None and plan_id is not None:
        try:
            with ui.db() as session:
                changed = plans.schedule_plan_change(
                    session,
                    identity=identity,
                    customer_id=customer_id,
                    plan_id=plan_id,
                    now=utcnow(),
                )
                starts = changed.next_plan_from
            st.success(
                f"{names[customer_id].split(' (')[0]} moves to {plan_names[plan_id]} from {starts}."
                if starts
                else f"{names[customer_id].split(' (')[0]} stays on "
                f"{plan_names[plan_id]}; no change is pending."
            )
        except ValidationError as exc:
            show_validation(exc)
        except Exception as exc:
            ui.show_error(exc)

st.subheader("Plans")
choice = st.selectbox(
    "Plan to edit",
    [*[p.id for p in active_plans], None],
    format_func=lambda i: "New plan…" if i is None else plan_names[i],
)
current = details.get(choice) if choice is not None else None
with st.form(f"plan-{choice}"):
    a, b, c = st.columns(3)
    name = a.text_input("Name", value=current["name"] if current else "")
    currency = b.text_input("Currency", value=current["currency"] if current else "EUR")
    base_fee = c.text_input("Base fee per month", value=current["base_fee"] if current else "0")
    d, e = st.columns(2)
    markup = d.text_input(
        "Markup on AWS costs (%)", value=current["markup_pct"] if current else "0"
    )
    limit = e.text_input(
        "Monthly AWS spend limit (empty: none)",
        value=(current["aws_spend_limit"] or "") if current else "",
    )
    metric_rows = st.data_editor(
        current["metrics"]
        if current
        else [
            {
                "metric": "api_calls",
                "unit": "calls",
                "aggregation": "sum",
                "included": "0",
                "unit_price": "0",
            }
        ],
        num_rows="dynamic",
        key=f"metrics-{choice}",
        column_config={
            "metric": st.column_config.TextColumn("Metric", required=True),
            "unit": st.column_config.TextColumn("Unit"),
            "aggregation": st.column_config.SelectboxColumn(
                "Billed on",
                options=list(plans.AGGREGATIONS),
                required=True,
                help="sum: the month's total (API calls); max: the month's peak (seats, GB)",
            ),
            "included": st.column_config.TextColumn("Included quantity"),
            "unit_price": st.column_config.TextColumn("Overage price per unit"),
        },
    )
    st.caption(
        f"Saving applies from {next_period}: a plan customers are billed on becomes a new "
        "version; the current month stays on the old one."
    )
    if st.form_submit_button("Save plan", type="primary"):
        try:
            spec = plans.spec_from_form(
                name=name,
                currency=currency,
                base_fee=base_fee,
                markup_pct=markup,
                aws_spend_limit=limit,
                metrics=list(metric_rows),
            )
            with ui.db() as session:
                if choice is None:
                    plans.create_plan(session, identity=identity, spec=spec, now=utcnow())
                    message = f"Plan {spec.name} created."
                else:
                    change = plans.update_plan(
                        session, identity=identity, plan_id=choice, spec=spec, now=utcnow()
                    )
                    message = (
                        f"Saved as a new version of {spec.name} from {next_period}; "
                        f"{len(change.customers_moved)} customer(s) move to it then."
                        if change.new_version
                        else f"Plan {spec.name} saved."
                    )
            st.success(message)
        except ValidationError as exc:
            show_validation(exc)
        except Exception as exc:
            ui.show_error(exc)

if choice is not None and current:
    plan = next(p for p in all_plans if p.id == choice)
    st.caption(
        f"Base fee {ui.fmt(plan.base_fee_minor, plan.currency)}; spend limit "
        + (
            ui.fmt(plan.aws_spend_limit_minor, plan.currency)
            if plan.aws_spend_limit_minor is not None
            else "none"
        )
        + f"; {sum(1 for c in customers if c['plan'] == plan.name)} customer(s) on it now."
    )

st.subheader("Stripe link")
with st.form("relink"):
    st.markdown(
        "**Repair a Stripe link** (a customer deleted in Stripe): its unpushed and failed "
        "invoices go to the new Stripe customer on the next invoice run"
    )
    left, middle, right = st.columns(3)
    links = {
        c["id"]: f"{c['customer']} ({c['stripe_customer'] or 'no Stripe customer'})"
        for c in customers
    }
    relink_id = left.selectbox("Customer to repair", list(links), format_func=lambda i: links[i])
    how = middle.radio(
        "How", ["Re-create it in Stripe", "Link an existing Stripe customer"], key="relink-how"
    )
    stripe_id = right.text_input("Existing Stripe customer id", placeholder="cus_...")
    if st.form_submit_button("Repair Stripe link") and relink_id is not None:
        recreate = how != "Link an existing Stripe customer"
        try:
            result = relink_customer(
                ui.engine(),
                ui.stripe_gateway(),
                customer_id=relink_id,
                actor=identity.actor,
                now=utcnow(),
                recreate=recreate,
                stripe_id=None if recreate else stripe_id,
            )
            # Rerun so the table, this form and the history show the new link.
            st.session_state["relinked"] = result.describe() + "."
            st.rerun()
        except ValidationError as exc:
            show_validation(exc)
        except Exception as exc:
            ui.show_error(exc)
if relinked := st.session_state.pop("relinked", None):
    st.success(relinked)

st.subheader("Recent plan and Stripe link changes")
if history:
    st.dataframe(
        [
            {
                "When": e.at,
                "Who": e.actor,
                "What": e.action,
                "Target": e.target,
                "After": str(e.after),
            }
            for e in history
        ],
        hide_index=True,
    )
else:
    st.caption("No plan changes recorded yet.")
