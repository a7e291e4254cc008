"""Customers and plans (admin): plans with their limits and prices, and who is on which plan.

Every change applies from the next period and lands in the audit log. Each action names the
customer or plan by id and the version this page showed; when someone changed it since, the
service refuses with a sentence (billing_core/versions.py) and nothing is written.
"""

from typing import Any

import streamlit as st

from billing_core import audit
from billing_core.customers import plan_specs, plans
from billing_core.customers.stripe_link import relink_customer
from billing_core.errors import ValidationError
from billing_core.models import Plan
from billing_core.periods import Period, utcnow
from billing_core.versions import changed_since
from billing_core.views import pricing_rules
from pages.common import ui

identity = ui.page_setup("Customers and plans", "admin")
now = utcnow()
next_period = Period.containing(now).next()


def show_validation(exc: ValidationError) -> None:
    header = str(exc).splitlines()[0]
    st.error(header + "\n\n" + "\n".join(f"- {p}" for p in exc.problems))


def ask_assignment(customer_versions: dict[int, int], plan_versions: dict[int, int]) -> None:
    # A callback runs before the rerun, with the versions drawn on the page the admin clicked:
    # the request names what they saw, whatever the lists hold by the time it runs.
    customer_id = st.session_state.get("assign_customer")
    plan_id = st.session_state.get("assign_plan")
    if customer_id in customer_versions and plan_id in plan_versions:
        st.session_state["assign_request"] = (
            customer_id,
            customer_versions[customer_id],
            plan_id,
            plan_versions[plan_id],
        )


def assign(customer_id: int, customer_version: int, plan_id: int, plan_version: int) -> None:
    try:
        with ui.db() as session:
            changed = plans.schedule_plan_change(
                session,
                identity=identity,
                customer_id=customer_id,
                customer_version=customer_version,
                plan_id=plan_id,
                plan_version=plan_version,
                now=utcnow(),
            )
            plan = session.get(Plan, plan_id)
            who, what, starts = changed.name, plan.name if plan else "", changed.next_plan_from
        st.session_state["assign_message"] = (
            f"{who} moves to {what} from {starts}."
            if starts
            else f"{who} stays on {what}; no change is pending."
        )
    except Exception as exc:
        st.session_state["assign_error"] = exc


def reload_plan(plan_id: int, name: str) -> None:
    # Forget what this admin opened, and follow the plan to its current version by name.
    st.session_state.setdefault("plan_opened", {}).pop(plan_id, None)
    with ui.db() as session:
        current = plans.active_plan_named(session, name)
    st.session_state["plan_choice"] = current.id if current else plan_id


if request := st.session_state.pop("assign_request", None):
    assign(*request)  # before the page reads its data, so the tables show the change

with ui.stop_on_error(), ui.db() as session:
    customers = plans.plan_overview(session, now)
    all_plans = plans.all_plans(session)
    details = {p.id: plans.describe_plan(session, p) for p in all_plans}
    specs = {p.id: plans.plan_spec(session, p) for p in all_plans}
    overrides = pricing_rules.override_rows(session, next_period)
    history = [
        e
        for e in audit.entries(session, limit=200)
        if e.action.startswith(("plan.", "customer.plan", "customer.stripe", "customer.pricing"))
    ][:30]

active_plans = [p for p in all_plans if p.active]
plan_names = {p.id: p.name for p in all_plans}
plan_by_id = {p.id: p for p in all_plans}

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
    left.selectbox("Customer", list(names), format_func=lambda i: names[i], key="assign_customer")
    right.selectbox(
        "Plan",
        [p.id for p in active_plans],
        format_func=lambda i: plan_names[i],
        key="assign_plan",
    )
    st.form_submit_button(
        "Assign plan",
        on_click=ask_assignment,
        args=(
            {c["id"]: c["version"] for c in customers},
            {p.id: p.version for p in active_plans},
        ),
    )
if message := st.session_state.pop("assign_message", None):
    st.success(message)
if (error := st.session_state.pop("assign_error", None)) is not None:
    if isinstance(error, ValidationError):
        show_validation(error)
    else:
        ui.show_error(error)

st.subheader("Plans")
# What this admin opened, per plan id: the version and values the editor shows until they save
# or reload, so a change by someone else cannot slip into their form (or their save).
opened: dict[int, tuple[int, dict[str, Any]]] = st.session_state.setdefault("plan_opened", {})
if (follow := st.session_state.pop("plan_follow", None)) is not None:
    st.session_state["plan_choice"] = follow  # set before the widget exists in this run
# "New plan…" is 0, not None: a selectbox holding None reads as "nothing selected" and falls
# back to its first option, which would turn a new plan into an edit of another one.
NEW_PLAN = 0
choices = [*[p.id for p in active_plans], *[i for i in opened if i in plan_by_id], NEW_PLAN]
choice = (
    st.selectbox(
        "Plan to edit",
        list(dict.fromkeys(choices)),
        format_func=lambda i: "New plan…" if i == NEW_PLAN else plan_names[i],
        key="plan_choice",
    )
    or None
)
if choice is not None and choice not in opened:
    opened[choice] = (plan_by_id[choice].version, details[choice])
seen, current = opened[choice] if choice is not None else (0, None)
if choice is not None and plan_by_id[choice].version != seen:
    st.warning(changed_since("This plan", plan_by_id[choice], now=now))
    st.button(
        "Reload the plan",
        key=f"plan-reload-{choice}",
        on_click=reload_plan,
        args=(choice, current["name"] if current else ""),
    )
form_key = "plan-new" if choice is None else f"plan-{choice}-v{seen}"
with st.form(form_key):
    a, b, c = st.columns(3)
    name = a.text_input("Name", value=current["name"] if current else "", key=f"{form_key}-name")
    currency = b.text_input(
        "Currency", value=current["currency"] if current else "EUR", key=f"{form_key}-currency"
    )
    base_fee = c.text_input(
        "Base fee per month",
        value=current["base_fee"] if current else "0",
        key=f"{form_key}-base-fee",
    )
    d, e = st.columns(2)
    markup = d.text_input(
        "Markup on AWS costs (%)",
        value=current["markup_pct"] if current else "0",
        key=f"{form_key}-markup",
    )
    limit = e.text_input(
        "Monthly AWS spend limit (empty: none)",
        value=(current["aws_spend_limit"] or "") if current else "",
        key=f"{form_key}-limit",
    )
    f, g = st.columns([1, 2])
    minimum = f.text_input(
        "Monthly minimum spend (empty: none)",
        value=(current.get("minimum_spend") or "") if current else "",
        key=f"{form_key}-minimum",
        help="When the month's charges fall short, a 'minimum commitment' line tops them up.",
    )
    adjust_cols = g.columns(3)
    treatments = {
        record_type: column.selectbox(
            {"Credit": "AWS credits", "Refund": "AWS refunds", "Tax": "AWS tax"}[record_type],
            ["pass_through", "at_cost", "keep"],
            index=["pass_through", "at_cost", "keep"].index(
                (current.get("adjustments") or {}).get(record_type, "pass_through")
                if current
                else "pass_through"
            ),
            format_func=lambda t: t.replace("_", " "),
            key=f"{form_key}-adjust-{record_type}",
            help="pass through: billed with the rules; at cost: billed as AWS charged it; "
            "keep: not billed (stays in the margin)",
        )
        for column, record_type in zip(adjust_cols, ("Credit", "Refund", "Tax"), strict=True)
    }
    # Empty cells hold '' (the grid draws None as a grey "None"); the form reads both as empty.
    rule_rows = st.data_editor(
        [
            {
                "service": r.get("service") or "",
                "account": r.get("account") or "",
                "usage_type": r.get("usage_type") or "",
                "pct": r["pct"],
            }
            for r in (current.get("rules") or [] if current else [])
        ]
        or [{"service": "", "account": "", "usage_type": "", "pct": ""}],
        num_rows="dynamic",
        key=f"{form_key}-rules",
        column_config={
            "service": st.column_config.TextColumn("AWS service (empty: any)"),
            "account": st.column_config.TextColumn("Linked account (empty: any)"),
            "usage_type": st.column_config.TextColumn("Usage type (empty: any)"),
            "pct": st.column_config.TextColumn(
                "Percent (+ markup, - discount)",
                help="The most specific rule wins: usage type, then service, then account, "
                "then the markup above for all AWS costs.",
            ),
        },
    )
    metric_rows = st.data_editor(
        [
            {k: v for k, v in m.items() if k != "tiers"}
            | {"model": m.get("model", "per_unit"), "package_size": m.get("package_size") or ""}
            for m in current["metrics"]
        ]
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
        key=f"{form_key}-metrics",
        column_config={
            "metric": st.column_config.TextColumn("Metric", required=True),
            "unit": st.column_config.TextColumn("Unit"),
            "aggregation": st.column_config.SelectboxColumn(
                "Billed on",
                options=list(plan_specs.AGGREGATIONS),
                required=True,
                help="sum: the month's total (API calls); max: the month's peak (seats, GB)",
            ),
            "included": st.column_config.TextColumn("Included quantity"),
            "unit_price": st.column_config.TextColumn("Overage price per unit (or block)"),
            "model": st.column_config.SelectboxColumn(
                "Charge model",
                options=["per_unit", "graduated", "volume", "package"],
                help="graduated and volume tiers are set in a plans file (import-plans)",
            ),
            "package_size": st.column_config.TextColumn("Block size (package)"),
        },
    )
    st.caption(
        f"Saving applies from {next_period}: a plan customers are billed on becomes a new "
        "version; the current month stays on the old one."
    )
    if st.form_submit_button("Save plan", type="primary"):
        try:
            spec = plan_specs.spec_from_form(
                name=name,
                currency=currency,
                base_fee=base_fee,
                markup_pct=markup,
                aws_spend_limit=limit,
                metrics=list(metric_rows),
                minimum_spend=minimum,
                rules=list(rule_rows),
                adjustments=treatments,
                tiers={m.metric: m.tiers for m in specs[choice].metrics} if choice else {},
            )
            with ui.db() as session:
                if choice is None:
                    created = plans.create_plan(session, identity=identity, spec=spec, now=utcnow())
                    saved_id, message = created.id, f"Plan {spec.name} created."
                else:
                    change = plans.update_plan(
                        session,
                        identity=identity,
                        plan_id=choice,
                        seen_version=seen,
                        spec=spec,
                        now=utcnow(),
                    )
                    saved_id = change.plan.id
                    message = (
                        f"Saved as a new version of {spec.name} from {next_period}; "
                        f"{len(change.customers_moved)} customer(s) move to it then."
                        if change.new_version
                        else f"Plan {spec.name} saved."
                        if change.changed
                        else f"Nothing to save: {spec.name} already has these values."
                    )
            if choice is not None:
                opened.pop(choice, None)  # saved: the editor opens the plan as it is now
            st.session_state["plan_follow"] = saved_id
            st.session_state["plan_message"] = message
            st.rerun()
        except ValidationError as exc:
            show_validation(exc)
        except Exception as exc:
            ui.show_error(exc)
if message := st.session_state.pop("plan_message", None):
    st.success(message)

if choice is not None and current:
    plan = plan_by_id[choice]
    st.caption(
        f"Base fee {ui.fmt(plan.base_fee_minor, plan.currency)}; spend limit "
        + (
            ui.fmt(plan.aws_spend_limit_minor, plan.currency)
            if plan.aws_spend_limit_minor is not None
            else "none"
        )
        + f"; {sum(1 for c in customers if c['plan'] == plan.name)} customer(s) on it now."
    )

if choice is not None and current:
    st.markdown(f"**Pricing rules of {current['name']}**")
    st.dataframe(pricing_rules.plan_rule_rows(current), hide_index=True, width="stretch")
st.markdown(f"**Customer overrides and discounts** (in force from {next_period})")
if overrides:
    st.dataframe(overrides, hide_index=True, width="stretch")
else:
    st.caption("No customer has its own rules or discounts (set them in a plans file).")

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
    # As the Audit log shows them: JSON, and blank where there is nothing (never "None").
    st.dataframe(
        [
            {
                "When": r["at"],
                "Who": r["actor"],
                "What": r["action"],
                "Target": r["target"],
                "After": r["after"],
            }
            for r in audit.table_rows(history)
        ],
        hide_index=True,
    )
else:
    st.caption("No plan changes recorded yet.")
