"""Usage vs plan limits: progress per metric, month-end projection, overage estimate, alerts."""

from decimal import Decimal

import streamlit as st

from billing_core.costs.snapshots import CostSource
from billing_core.errors import ValidationError
from billing_core.periods import utcnow, when_text
from billing_core.usage import alerts, limits
from billing_core.usage.import_csv import import_usage_csv
from billing_core.views import usage as views_usage
from pages.common import ui, url_state

identity = ui.page_setup("Usage vs plan limits")
now = utcnow()

# Admins import first, so the figures below already include the new usage.
if identity.can("admin"):
    with st.expander("Import usage (CSV)", icon=":material/upload_file:"):
        st.caption(
            "Columns: `customer` (email or id), `metric`, `quantity`, `timestamp` (ISO 8601, "
            "UTC) and optionally `idempotency_key`. Every row is checked first: one bad row "
            "imports nothing. Importing the same file again adds nothing."
        )
        # A form sends the chosen file and the click together: outside one, a click made while
        # the upload's own rerun is still running can be dropped and nothing happens.
        with st.form("usage_import", border=False):
            uploaded = st.file_uploader("Usage CSV", type=["csv"], key="usage_upload")
            clicked = st.form_submit_button("Import usage", type="primary")
        if clicked and uploaded is None:
            st.warning("Choose a CSV file first, then press Import usage.")
        if clicked and uploaded is not None:
            try:
                with ui.db() as session:
                    result = import_usage_csv(
                        session,
                        uploaded.getvalue(),
                        now=utcnow(),
                        actor=identity.actor,
                        source="upload",
                    )
                st.success(result.describe().capitalize())
            except ValidationError as exc:
                header = str(exc).splitlines()[0]
                st.error(header + "\n\n" + "\n".join(f"- {p}" for p in exc.problems))
            except Exception as exc:
                ui.show_error(exc)

cost_source = CostSource.of(ui.settings())
with ui.stop_on_error(), ui.db() as session:
    choices = views_usage.period_choices(session, now)
# Period, statuses shown and the customer drilled into live in the URL (?period=, ?show=,
# ?customer=): a reload or a pasted link shows the same view.
PERIOD = url_state.one("usage_period", "period", choices, choices[0])
SHOW = url_state.choices("usage_show", "show", list(views_usage.STATUS_ORDER))
url_state.restore("usage", [PERIOD, SHOW])
period = st.selectbox("Period", choices, format_func=str, key="usage_period")
with ui.stop_on_error(), ui.db() as session:
    report = limits.build_usage_report(session, period, now, source=cost_source)
    period_alerts = alerts.alerts_for_period(session, period)

if not report.rows:
    st.info(f"No customer with a plan in {period}: assign plans on the Customers and plans page.")
    st.stop()

closed = period.is_closed(now)
st.caption(
    f"{period}: "
    + (
        "closed month, final figures."
        if closed
        else f"day {period.days_elapsed(now) + 1} of {period.days}; projections use "
        "the average daily usage so far (levels such as seats: the peak so far)."
    )
)
counts = views_usage.status_counts(report)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Customers over a limit", counts.get("over", 0))
c2.metric("Customers near a limit", counts.get("near", 0))
c3.metric("Projected over", counts.get("projected over", 0))
c4.metric("Alerts this period", len(period_alerts))
left, right = st.columns(2)
so_far = views_usage.overage_totals(report.rows)
projected = views_usage.overage_totals(report.rows, projected=True)
left.markdown(f"**Overage so far:** {ui.fmt_by_currency(so_far) if so_far else 'none'}")
right.markdown(
    "**Projected overage at month end:** "
    + (ui.fmt_by_currency(projected) if projected else "none")
)
if report.missing_rates:
    st.warning(
        "No exchange rate recorded for "
        + ", ".join(sorted(report.missing_rates))
        + ": those overage estimates are missing until a rate is added."
    )
if report.cost_note:
    st.caption(report.cost_note[0].upper() + report.cost_note[1:])

statuses = st.multiselect(
    "Show", list(views_usage.STATUS_ORDER), placeholder="All statuses", key="usage_show"
)
url_state.publish("usage", [PERIOD, SHOW])
frame = views_usage.report_frame(views_usage.iter_rows(report, statuses or None))
st.dataframe(
    frame,
    hide_index=True,
    column_order=[c for c in views_usage.COLUMNS if c != "customer_id"],
    column_config={
        "Used %": st.column_config.ProgressColumn(
            "Used %", min_value=0, max_value=100, format="%.0f%%", width="small"
        ),
        "Projected %": st.column_config.ProgressColumn(
            "Projected %", min_value=0, max_value=100, format="%.0f%%", width="small"
        ),
        # Wide enough for money ("EUR 1,234.56"): the grid sizes columns by the first rows,
        # where counts such as "0" would leave AWS spend cut off.
        "Used": st.column_config.TextColumn(
            "Used", help="AWS spend in the plan's currency", width=110
        ),
        "Projected": st.column_config.Column("Projected", width=110),
        "Overage cost": st.column_config.TextColumn("Overage cost", help="In the invoice currency"),
    },
)

st.subheader("Customer drill-down")
names = {r.customer_id: r.customer for r in report.rows}
DRILL = url_state.one("usage_customer", "customer", list(names), next(iter(names)))
url_state.restore("usage_customer", [DRILL])
chosen = st.selectbox(
    "Customer", list(names), format_func=lambda cid: names[cid], key="usage_customer"
)
url_state.publish("usage_customer", [DRILL])
rows = report.for_customer(chosen)
with ui.stop_on_error(), ui.db() as session:
    daily = views_usage.daily_usage(
        session, chosen, period, {r.metric: r.aggregation for r in rows}
    )
    spend_points = views_usage.spend_by_day(session, chosen, period, cost_source)
cols = st.columns(2)
for index, row in enumerate(rows):
    if row.is_spend:
        usd = spend_points[-1].running if spend_points else Decimal(0)
        scale = row.used / usd if usd else Decimal(0)
        fig = views_usage.metric_figure(row, spend_points, period, scale=scale)
    else:
        fig = views_usage.metric_figure(row, daily.get(row.metric, []), period)
    cols[index % 2].plotly_chart(fig, key=f"chart-{row.metric}")

st.subheader("Alerts")
if period_alerts:
    # Times as text: an alert not published (yet) reads blank, not the grid's grey "None".
    st.dataframe(
        [
            {
                "Raised": when_text(a.created_at),
                "Customer": names.get(a.customer_id, a.customer_id),
                "Metric": a.metric,
                "Threshold": f"{a.threshold_pct}%",
                "Message": a.message,
                "Published": when_text(a.published_at),
            }
            for a in period_alerts
        ],
        hide_index=True,
    )
else:
    st.caption(f"No alerts in {period}. `python -m billing_core check-alerts` raises them (cron).")
