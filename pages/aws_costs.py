"""AWS costs: this month so far, for whom, on what. Reads stored snapshots only.

Cost Explorer is called only when someone presses Refresh (each request costs USD 0.01);
every other rerun reads the database.
"""

from decimal import Decimal

import pandas as pd
import streamlit as st

from billing_core.costs import attribution, refresh, snapshots
from billing_core.money import display_change, minor_to_decimal, round_minor
from billing_core.periods import Period, utcnow
from billing_core.views import aws_costs
from billing_core.views import aws_costs_report as report
from pages.common import ui, url_state

identity = ui.page_setup("AWS costs")
cfg = ui.settings()
now = utcnow()
ALL_CUSTOMERS = "All customers"
ALL_SERVICES = "All services"

# --- data: the months with figures ----------------------------------------------------------
with ui.stop_on_error(), ui.db() as session:
    stored = snapshots.snapshot_periods(
        session, metric=cfg.cost_metric, group_by=snapshots.group_label(cfg)
    )
    customer_names = dict(attribution.Attribution.load(session).names)
current = Period.containing(now)
months = sorted({current, *stored}, reverse=True)
# The newest month with figures first; the running month stays selectable for a refresh.
default_month = stored[0] if stored else current

# --- filters (kept in the URL: ?month=, ?customer=, ?service=) ---------------------------
customer_options: list[object] = [
    ALL_CUSTOMERS,
    *sorted(customer_names, key=lambda c: customer_names[c]),
    snapshots.UNATTRIBUTED,
]
MONTH = url_state.one("costs_month", "month", months, default_month)
CUSTOMER = url_state.one("costs_customer", "customer", customer_options, ALL_CUSTOMERS)
url_state.restore("aws_costs", [MONTH, CUSTOMER])
f1, f2, f3 = st.columns([1, 2, 2])
period = f1.selectbox("Month", months, format_func=str, key="costs_month")
customer_choice = f2.selectbox(
    "Customer",
    customer_options,
    format_func=lambda c: (
        c
        if c == ALL_CUSTOMERS
        else (snapshots.UNATTRIBUTED_LABEL if c == snapshots.UNATTRIBUTED else customer_names[c])
    ),
    key="costs_customer",
)
with ui.stop_on_error(), ui.db() as session:
    services = snapshots.available_services(session, cfg, period)
SERVICE = url_state.one("costs_service", "service", [ALL_SERVICES, *services], ALL_SERVICES)
url_state.restore("aws_costs_service", [SERVICE])
service_choice = f3.selectbox("Service", [ALL_SERVICES, *services], key="costs_service")
url_state.publish("aws_costs", [MONTH, CUSTOMER])
url_state.publish("aws_costs_service", [SERVICE])
filters = aws_costs.CostFilter(
    customer=None if customer_choice == ALL_CUSTOMERS else customer_choice,  # type: ignore[arg-type]
    service=None if service_choice == ALL_SERVICES else service_choice,
)

# --- refresh: the only path to Cost Explorer, and only on an explicit click ------------------
r1, r2 = st.columns([4, 1], vertical_alignment="center")
demo = cfg.mode == "demo"
clicked = r2.button(
    "Refresh",
    icon=":material/refresh:",
    disabled=demo,
    help="Demo mode: figures come from the seeded demo database."
    if demo
    else "Fetch this month from AWS Cost Explorer now (USD 0.01 per request).",
)
refresh_errors: list[str] = []
if clicked:
    with st.spinner("Fetching from Cost Explorer..."):
        try:
            with ui.db() as session:
                outcomes = refresh.refresh_for_page(session, cfg, period, now=now)
        except Exception as exc:
            ui.show_error(exc)
            outcomes = []
    spent = sum(o.request_count for o in outcomes)
    refresh_errors = [o.error for o in outcomes if o.error]
    if not refresh_errors and outcomes:
        cost = sum(o.request_cost for o in outcomes)
        st.toast(f"Refreshed: {spent} Cost Explorer request(s), USD {cost:.2f}.")

with ui.stop_on_error(), ui.db() as session:
    view = aws_costs.build_costs_view(session, cfg, period, filters)
    failure = refresh.last_failure(session)


def money(amount: Decimal) -> str:
    return ui.fmt(round_minor(amount, view.currency), view.currency)


info = view.snapshot
age = report.describe_age(info.age(now)) if info else None
for message in refresh_errors:
    kept = (
        f" Still showing the snapshot from {info.fetched_at:%Y-%m-%d %H:%M} UTC ({age} old)."
        if info
        else ""
    )
    st.error(message + kept)
if failure is not None and not refresh_errors:
    st.warning(
        f"The last refresh ({failure.period}, {failure.at:%Y-%m-%d %H:%M} UTC) failed: "
        f"{failure.message}"
    )
if info is None:
    r1.caption("No snapshot stored for this month.")
    st.info(
        f"No AWS cost figures for {period} yet. Press Refresh, or let cron run "
        f"`python -m billing_core fetch-costs --period {period}`."
    )
    st.stop()

stale = info.stale(now, cfg.cost_snapshot_ttl_seconds)
r1.caption(
    f"Last refreshed {info.fetched_at:%Y-%m-%d %H:%M} UTC ({age} ago) · "
    f"{info.granularity.lower()} figures · {info.metric} by {info.group_by} · "
    f"source: {info.source}" + (" · older than the refresh interval" if stale else "")
)
if info.estimated:
    st.badge(
        "Estimated",
        icon=":material/schedule:",
        color="orange",
        help="AWS has not finalised these figures; credits, refunds and fees may still change.",
    )

# --- metrics ---------------------------------------------------------------------------------
m1, m2, m3, m4 = st.columns(4)
delta = None
if view.change is not None:
    pct = f" ({view.change_pct:+.1f} %)" if view.change_pct is not None else ""
    change = display_change(round_minor(view.change, view.currency), view.currency)
    delta = f"{change}{pct}"
m1.metric(
    "Month to date" if view.running else f"Total {period}",
    money(view.total),
    delta=delta,
    delta_color="inverse",
    help=f"The change compares {view.compared_what}." if view.previous_period else None,
)
m2.metric(
    f"Last month ({view.previous_period})",
    money(view.previous_total) if view.previous_total is not None else "n/a",
)
if view.forecast is not None:
    m3.metric(
        "Forecast month end",
        money(view.forecast),
        help=f"Source: {view.forecast_source}.",
    )
else:
    m3.metric("Forecast month end", "n/a", help="Only for a running month.")
# The card follows the filters: the unattributed part of what is selected.
share = view.selected_unattributed_share if filters.any else view.unattributed_share
m4.metric(
    "Unattributed",
    money(view.selected_unattributed),
    delta=(
        f"{share:.1f} % of the {'selection' if filters.any else 'account'}"
        if share is not None
        else None
    ),
    delta_color="off",
    help=(
        "Spend in accounts or tags that belong to no customer, and spend of the shared "
        "accounts and services, within the filters above (a single customer has none). "
        "Never dropped: invoices split it by SHARED_COST_RULE."
    ),
)
if view.shared_note:
    st.caption(view.shared_note)
if view.adjustments:
    st.caption(
        "Included in the total: "
        + ", ".join(f"{k.lower()} {money(v)}" for k, v in sorted(view.adjustments.items()))
    )

# --- charts ----------------------------------------------------------------------------------
if view.by_service.empty:
    st.info("No costs match these filters.")
else:
    c1, c2 = st.columns(2)
    c1.plotly_chart(aws_costs.by_service_figure(view), width="stretch")
    c2.plotly_chart(aws_costs.by_customer_figure(view), width="stretch")
if view.daily_snapshot is None:
    st.caption("Only monthly figures are stored for this month: no daily trend.")
elif not view.daily.empty:
    st.plotly_chart(aws_costs.daily_figure(view), width="stretch")
    if view.daily_snapshot.id != info.id:
        st.caption(
            f"Daily figures from the snapshot of {view.daily_snapshot.fetched_at:%Y-%m-%d %H:%M} "
            "UTC; totals above come from the newer monthly snapshot."
        )

# --- table and CSV ---------------------------------------------------------------------------
st.subheader("Breakdown")
table = view.breakdown.copy()
# Rounded once to the currency's minor unit for display; the CSV keeps full precision.
table["amount"] = pd.Series(
    [minor_to_decimal(round_minor(a, view.currency), view.currency) for a in table["amount"]],
    index=table.index,
    dtype=object,
)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "customer": st.column_config.TextColumn("Customer"),
        "service": st.column_config.TextColumn("Service"),
        "record_type": st.column_config.TextColumn("Record type"),
        "amount": st.column_config.NumberColumn(f"Amount ({view.currency})", format="%.2f"),
    },
)
st.download_button(
    "Download CSV",
    data=report.breakdown_csv_bytes(view),
    file_name=report.breakdown_file_name(
        view,
        None
        if customer_choice == ALL_CUSTOMERS
        else (
            snapshots.UNATTRIBUTED_LABEL
            if customer_choice == snapshots.UNATTRIBUTED
            else customer_names[customer_choice]  # type: ignore[index]
        ),
    ),
    mime="text/csv",
    icon=":material/download:",
)
