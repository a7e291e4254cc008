"""Overview: the month's cockpit, from the database only. Per currency, never summed across
currencies; every figure links to the page that explains it, already filtered."""

from decimal import Decimal

import pandas as pd
import streamlit as st

from billing_core.errors import ConfigError
from billing_core.invoicing.margin import Margin
from billing_core.money import display, display_change, round_minor
from billing_core.periods import Period, utcnow
from billing_core.views import overview as ov
from billing_core.views import receivables as rcv
from pages.common import ui
from pages.common.links import link, page_url

identity = ui.page_setup("Overview")
cfg = ui.settings()
now = utcnow()
running = Period.containing(now)
last_closed = running.previous()


def _money(amount: object, currency: str) -> str:
    """Exact Decimal (major units) or int (minor units) as 'EUR 1,234.50'."""
    if isinstance(amount, int):
        return ui.fmt(amount, currency)
    return display(round_minor(amount, currency), currency)  # type: ignore[arg-type]


def _signed(amount: int | Decimal, currency: str) -> str:
    """'+EUR 12.00' / '-EUR 12.00': the sign first, so metric deltas point the right way."""
    minor = amount if isinstance(amount, int) else round_minor(amount, currency)
    return display_change(minor, currency)


def _pct(value: object) -> str:
    return "–" if value is None else f"{value:.1f} %"


# --- the month: ?month=YYYY-MM keeps it in the URL --------------------------------------------
choices = [last_closed.shift(-i) for i in range(24)]
with ui.stop_on_error(), ui.db() as session:
    # Until the last closed month is invoiced (on the 3rd), the newest billed one is shown.
    newest = ov.latest_billed_month(session, last_closed) or last_closed
try:
    asked = Period.parse(st.query_params.get("month", str(newest)))
except ConfigError:
    asked = newest
if asked not in choices:
    asked = newest
top_left, top_right = st.columns([3, 1], vertical_alignment="bottom")
month: Period = top_right.selectbox(
    "Month",
    choices,
    index=choices.index(asked),
    format_func=str,
    key="overview_month",
    help="The closed month whose billing, margin and movers are shown.",
)
st.query_params["month"] = str(month)

with ui.stop_on_error(), ui.db() as session:
    data = ov.build_overview(session, now)
    cockpit = ov.build_cockpit(session, cfg, now=now, month=month)

top_left.caption(
    f"Today is day {data.days_elapsed + 1} of {data.days_in_month} of {running}. Billing, "
    f"margin and movers are for {month}; amounts per currency, never added across currencies."
)

# --- headline counts ----------------------------------------------------------------------------
c1, c2, c3, c4 = st.columns(4)
c1.metric("Active customers", data.active_customers)
c2.metric(
    f"Invoices billed for {month}",
    sum(m.invoices for m in (cockpit.margin_of(c, month) for c in cockpit.currencies)),
)
c3.metric(
    "Open invoices", data.open_count, help=f"Still due: {ui.fmt_by_currency(data.open_minor)}"
)
c4.metric(
    "Failed payments",
    data.failed_count,
    help=f"Still due after a failed payment: {ui.fmt_by_currency(data.failed_minor)}",
)
link("pages/invoices.py", f"Invoices of {month}", {"period": str(month)}, where=c2)
link("pages/invoices.py", "Open invoices", {"status": "open"}, where=c3)
link("pages/invoices.py", "Failed payments", {"status": "failed"}, where=c4)

# --- AWS this month so far ------------------------------------------------------------------------
mtd = cockpit.month_to_date
st.subheader(f"AWS cost this month so far ({running})")
a1, a2, a3, a4 = st.columns(4)
if mtd.total is None:
    a1.info(f"No AWS cost figures for {running} yet: refresh them on the AWS costs page.")
else:
    a1.metric(
        f"Month to date, {mtd.covered_days} day{'' if mtd.covered_days == 1 else 's'}",
        _money(mtd.total, mtd.currency),
        delta=None if mtd.change is None else _signed(mtd.change, mtd.currency),
        delta_color="inverse",
        help=f"At cost, before markup. The change compares {mtd.compared}.",
    )
    a2.metric(
        "Forecast month end",
        "–" if mtd.forecast is None else _money(mtd.forecast, mtd.currency),
        delta=None if mtd.forecast_change_pct is None else f"{mtd.forecast_change_pct:+.1f} %",
        delta_color="inverse",
        help=f"{mtd.forecast_source or 'No forecast'}; change against last month's total.",
    )
    a3.metric(
        f"Last month ({running.previous()})",
        "–" if mtd.last_month_total is None else _money(mtd.last_month_total, mtd.currency),
    )
link("pages/aws_costs.py", "AWS costs page", {"month": str(running)}, where=a4)

# --- revenue and gross margin, per currency ---------------------------------------------------
st.subheader("Billed revenue, AWS cost and gross margin")
st.caption(
    "Revenue: invoices billed (open, paid, failed, uncollectible). AWS cost at cost, before "
    "markup, converted at each invoice's own exchange rate. Same figures as "
    "`python -m billing_core margin-report`."
)
currencies = cockpit.currencies
if not currencies:
    st.info(f"No invoices billed in the 13 months up to {month}: run the invoicing first.")
for currency in currencies:
    # One section per currency, one under the other (a tab would hide its figures).
    with st.container(border=True):
        st.markdown(f"#### {currency}")
        this: Margin = cockpit.margin_of(currency, month)
        before: Margin = cockpit.margin_of(currency, month.previous())
        m1, m2, m3, m4 = st.columns(4)
        m1.metric(
            f"Billed {month}",
            _money(this.revenue_minor, currency),
            delta=_signed(this.revenue_minor - before.revenue_minor, currency),
        )
        m2.metric("AWS cost (at cost)", _money(this.cost, currency), help="Before markup.")
        m3.metric(
            "Gross margin",
            _money(this.margin, currency),
            delta=_signed(this.margin - before.margin, currency),
        )
        change = (
            None
            if this.margin_pct is None or before.margin_pct is None
            else f"{this.margin_pct - before.margin_pct:+.1f} pp"
        )
        m4.metric("Gross margin %", _pct(this.margin_pct), delta=change)
        link(
            "pages/invoices.py",
            f"{currency} invoices of {month}",
            {"period": str(month), "currency": currency},
        )
        st.plotly_chart(
            ov.revenue_figure(cockpit.by_month[currency], currency),
            width="stretch",
            key=f"revenue_{currency}",
        )
        rows = cockpit.by_customer.get(currency, [])
        st.markdown(f"**Gross margin by customer, {month}**")
        if not rows:
            st.caption(f"Nothing billed in {currency} for {month}.")
            continue
        table = pd.DataFrame(
            [
                {
                    "Customer": r.key,
                    "Invoices": r.invoices,
                    "Billed": _money(r.revenue_minor, currency),
                    "AWS resale": _money(r.revenue_parts["aws_resale"], currency),
                    "AWS cost": _money(r.cost, currency),
                    "Gross margin": _money(r.margin, currency),
                    "Margin %": _pct(r.margin_pct),
                    "Details": "/" + page_url("pages/customer.py", {"customer": r.ref}),
                }
                for r in rows
            ]
        )
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={
                "Details": st.column_config.LinkColumn("Details", display_text="Customer page"),
            },
        )

# --- top movers ----------------------------------------------------------------------------------
st.subheader(f"Top movers, {month.previous()} to {month}")


def _movers_table(movers: list[ov.Mover]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Customer": m.customer,
                str(month.previous()): _money(m.before, m.currency),
                str(month): _money(m.now, m.currency),
                "Change": _signed(m.change, m.currency),
                "Change %": "new" if m.change_pct is None else f"{m.change_pct:+.1f} %",
                "Details": "/" + page_url("pages/customer.py", {"customer": m.customer_id}),
            }
            for m in movers
        ]
    )


_LINKS = {"Details": st.column_config.LinkColumn("Details", display_text="Customer page")}
cost_tab, billed_tab = st.tabs(["AWS cost (USD, at cost)", "Billed"])
with cost_tab:
    if cockpit.cost_movers:
        st.dataframe(
            _movers_table(cockpit.cost_movers),
            hide_index=True,
            width="stretch",
            column_config=_LINKS,
        )
    else:
        st.caption("No change in any customer's AWS cost.")
with billed_tab:
    if not cockpit.invoice_movers:
        st.caption("No change in any customer's invoice.")
    for currency, movers in cockpit.invoice_movers.items():
        st.caption(f"Billed in {currency}")
        st.dataframe(_movers_table(movers), hide_index=True, width="stretch", column_config=_LINKS)

# --- receivables ------------------------------------------------------------------------------
st.subheader("Receivables")
with ui.stop_on_error(), ui.db() as session:
    receivables = rcv.receivables_summary(session, as_of=now)
if not receivables:
    st.info("Nobody owes anything and nothing was invoiced in the last 90 days.")
for currency, r in receivables.items():
    st.markdown(f"**{currency}**")
    k1, k2, k3 = st.columns(3)
    k1.metric("Open", ui.fmt(r.open_minor, currency), help=f"{r.open_count} invoice(s) still due")
    k2.metric(
        "Overdue",
        ui.fmt(r.overdue_minor, currency),
        help=f"{r.overdue_count} invoice(s) at least one day past the due date",
    )
    k3.metric(
        "Declined, still due",
        ui.fmt(r.failed_minor, currency),
        help=f"{r.failed_count} invoice(s) whose last charge was declined",
    )
    k4, k5, k6 = st.columns(3)
    k4.metric(
        "Collection rate",
        "–" if r.collection_rate is None else f"{r.collection_rate * 100:.1f} %",
        help=f"Paid of billed, invoices issued in the last {r.window_days} days",
    )
    k5.metric(
        "DSO",
        "–" if r.dso_days is None else f"{r.dso_days} days",
        help=f"Days sales outstanding: open / billed in the last {r.window_days} days × "
        f"{r.window_days}",
    )
    link("pages/invoices.py", "Open invoices", {"status": "open", "currency": currency}, where=k6)
    link("pages/invoices.py", "Overdue invoices", {"overdue": "1", "currency": currency}, where=k6)
    link(
        "pages/invoices.py", "Failed payments", {"status": "failed", "currency": currency}, where=k6
    )
    left, right = st.columns(2)
    buckets = pd.DataFrame(
        [
            {
                "Days past due": b.label,
                "Invoices": b.count,
                "Amount due": ui.fmt(b.amount_minor, currency),
                "Invoices page": "/"
                + page_url("pages/invoices.py", {"bucket": str(b.bucket), "currency": currency}),
            }
            for b in r.buckets.values()
        ]
    )
    left.dataframe(
        buckets,
        hide_index=True,
        width="stretch",
        column_config={
            "Invoices page": st.column_config.LinkColumn("Invoices page", display_text="Show")
        },
    )
    right.plotly_chart(ov.aging_figure(r, currency), width="stretch", key=f"aging_{currency}")
