"""Collections: what customers owe by due date, the reminders Stripe sent for us, failed
automatic payments with Stripe's retry schedule, and write-offs per month.

Everyone with a role sees it; only admins retry a payment or create a card setup link (the
actions check the role again in billing_core). Reminders and write-offs are taken by
`python -m billing_core collections` from cron, never from this page.
"""

import streamlit as st

from billing_core.payments import payment_methods as pm
from billing_core.periods import utcnow
from billing_core.views import collections as view
from billing_core.views.common_text import DAY, blank_missing
from pages.common import ui

identity = ui.page_setup("Collections")
now = utcnow()
policy = ui.settings().collections_policy


with ui.stop_on_error(), ui.db() as session:
    receivables = view.receivables(session, now)
    open_frame = view.open_invoices_frame(session, now, policy)
    reminders = view.reminders_frame(session)
    failed = view.failed_payments(session)
    write_offs = view.write_offs_frame(session)
    pending = view.pending_claims(session)

st.caption(
    f"Policy: {policy.describe()} (days from the due date; COLLECTIONS_* settings). "
    "Reminders and final notices are sent by Stripe when `python -m billing_core collections` "
    "runs from cron."
)
ui.show_flash("collections_flash")

st.subheader("Receivables")
if receivables:
    cols = st.columns(max(1, len({r.currency for r in receivables})))
    for col, currency in zip(cols, sorted({r.currency for r in receivables}), strict=False):
        mine = {r.bucket: r for r in receivables if r.currency == currency}
        overdue = mine.get("overdue")
        col.metric(
            f"Overdue ({currency})",
            overdue.amount if overdue else ui.fmt(0, currency),
            help="Open invoices past their due date: total less what was paid.",
        )
    st.dataframe(
        view.receivables_frame(receivables),
        hide_index=True,
        width="stretch",
        column_config={
            "currency": st.column_config.TextColumn("Currency"),
            "not yet due": st.column_config.TextColumn("Not yet due (invoices)"),
            "overdue": st.column_config.TextColumn("Overdue (invoices)"),
            "uncollectible": st.column_config.TextColumn("Uncollectible (invoices)"),
        },
    )
else:
    st.info("Nothing is owed: no open or uncollectible invoices.")

st.subheader("Open invoices")
if note := view.open_table_note(len(open_frame), view.open_count(receivables)):
    st.caption(note)
# An invoice charged automatically has no due date until Stripe tries it: its due date and
# days late read blank, not the grid's grey "None" (the days as text still sort by size).
st.dataframe(
    blank_missing(open_frame, {"due": DAY}, counts=["days past due"]),
    hide_index=True,
    width="stretch",
    column_config={
        "invoice": st.column_config.TextColumn("Invoice"),
        "customer": st.column_config.TextColumn("Customer"),
        "amount due": st.column_config.TextColumn("Amount due"),
        "due": st.column_config.TextColumn("Due", width="small"),
        "days past due": st.column_config.TextColumn(
            "Days late",
            width="small",
            alignment="right",
            help="Calendar days past the due date; negative: days left before it.",
        ),
        "collection": st.column_config.TextColumn("Collection"),
        "last step": st.column_config.TextColumn("Last step"),
        "next step": st.column_config.TextColumn("Next step"),
    },
)

tab_sent, tab_failed, tab_written = st.tabs(
    ["Reminders sent", f"Failed payments ({len(failed)})", "Write-offs"]
)
with tab_sent:
    if reminders.empty:
        st.info("No reminder has been sent yet.")
    else:
        st.dataframe(
            reminders,
            hide_index=True,
            width="stretch",
            column_config={
                "when": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm"),
                "step": st.column_config.TextColumn("Step"),
                "invoice": st.column_config.TextColumn("Invoice"),
                "customer": st.column_config.TextColumn("Customer"),
                "days past due": st.column_config.NumberColumn("Days past due", format="%d"),
                "by": st.column_config.TextColumn("By"),
            },
        )
    if pending:
        st.warning(
            f"{len(pending)} step(s) claimed but not finished (a run in flight, stopped, or "
            "refused by Stripe); the next collections run finishes them: "
            + "; ".join(
                f"invoice #{p.invoice_id} {p.step}: {p.error or p.status}" for p in pending[:5]
            )
        )

with tab_failed:
    if not failed:
        st.info("No failed automatic payment.")
    else:
        st.dataframe(
            view.failed_payments_frame(failed, now),
            hide_index=True,
            width="stretch",
            column_config={
                "invoice": st.column_config.TextColumn("Invoice"),
                "customer": st.column_config.TextColumn("Customer"),
                "amount due": st.column_config.TextColumn("Amount due"),
                "attempts": st.column_config.NumberColumn("Attempts", format="%d"),
                "retry schedule": st.column_config.TextColumn("Stripe's retry schedule"),
                "last error": st.column_config.TextColumn("Last error"),
            },
        )
        if identity.can("admin"):
            st.markdown("**Retry a payment or ask for a new card**")
            labels = {f.invoice_id: f"{f.number} · {f.customer} · {f.amount_due}" for f in failed}
            chosen = st.selectbox(
                "Invoice", list(labels), format_func=labels.__getitem__, key="col_failed"
            )
            picked = next(f for f in failed if f.invoice_id == chosen)
            if not picked.in_stripe:
                st.caption("This invoice is a demo record, not in Stripe: nothing to retry.")
            else:
                # Read from Stripe once per customer and session, not on every rerun.
                cache_key = f"col_methods-{picked.customer_id}"
                methods: list[pm.SavedPaymentMethod] = st.session_state.get(cache_key, [])
                if cache_key not in st.session_state:
                    try:
                        with ui.db() as session:
                            methods = pm.saved_payment_methods(
                                session, ui.stripe_gateway(), customer_id=picked.customer_id
                            )
                        st.session_state[cache_key] = methods
                    except Exception as exc:
                        ui.show_error(exc)
                choices: dict[str | None, str] = {None: "The customer's default payment method"}
                choices |= {m.id: m.label + (" (default)" if m.default else "") for m in methods}
                method = st.selectbox(
                    "Charge", list(choices), format_func=choices.__getitem__, key="col_pm"
                )
                left, right = st.columns(2)
                left.button(
                    "Retry the payment now",
                    key="col_retry",
                    type="primary",
                    on_click=ui.retry_payment,
                    args=("collections_flash", identity, picked.invoice_id, method),
                )
                if right.button("Create a card setup link", key="col_setup"):
                    ui.show_setup_link(identity, picked.customer_id)
        else:
            st.caption("Admins can retry a payment or send a card setup link from here.")

with tab_written:
    if write_offs.empty:
        st.info("Nothing written off: no invoice is uncollectible.")
    else:
        st.plotly_chart(view.write_offs_figure(write_offs), width="stretch")
        st.dataframe(
            write_offs.drop(columns="amount_minor"),
            hide_index=True,
            width="stretch",
            column_config={
                "month": st.column_config.TextColumn("Month"),
                "currency": st.column_config.TextColumn("Currency"),
                "invoices": st.column_config.NumberColumn("Invoices", format="%d"),
                "written off": st.column_config.TextColumn("Written off"),
            },
        )
