"""Overview: this month so far, from the database only."""

import streamlit as st

from billing_core.periods import utcnow
from billing_core.views.overview import build_overview
from pages.common import ui

identity = ui.page_setup("Overview")

with ui.stop_on_error(), ui.db() as session:
    data = build_overview(session, utcnow())

st.caption(
    f"{data.period}: day {data.days_elapsed + 1} of {data.days_in_month}. "
    f"Last month is {data.last_period}."
)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Active customers", data.active_customers)
c2.metric(f"Invoices for {data.last_period}", data.invoices_last_month)
c3.metric("Open invoices", data.open_count)
c4.metric("Failed payments", data.failed_count)

st.subheader(f"Billed for {data.last_period}")
if data.billed_last_month:
    cols = st.columns(len(data.billed_last_month))
    for col, (currency, minor) in zip(cols, sorted(data.billed_last_month.items()), strict=True):
        credit = data.credit_notes_last_month.get(currency, 0)
        col.metric(
            currency,
            ui.fmt(minor, currency),
            delta=f"-{ui.fmt(credit, currency)} credit notes" if credit else None,
            help="Totals of the invoices as issued; below, what credit notes took back since",
        )
else:
    st.info(f"No invoices for {data.last_period} yet: run the invoicing for that month.")

left, right = st.columns(2)
left.markdown(f"**Open:** {ui.fmt_by_currency(data.open_minor)}")
right.markdown(f"**Failed:** {ui.fmt_by_currency(data.failed_minor)}")
