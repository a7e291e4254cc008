"""Invoices: history with filters, figures per currency, chart, table, detail, CSV, payments."""

from typing import Any

import streamlit as st

from billing_core.invoicing import export_csv as exports
from billing_core.payments import payment_methods as pm
from billing_core.payments import sync
from billing_core.periods import utcnow, when_text
from billing_core.states import DisplayStatus, EventOutcome
from billing_core.views import corrections as corrections_view
from billing_core.views import invoices as inv
from billing_core.views import receivables as rcv
from billing_core.views.common_text import DAY, MINUTE, blank_missing, status_label
from pages.common import corrections, ui, url_state

identity = ui.page_setup("Invoices")
is_admin = identity.can("admin")

# Headline figures shown per currency, in this order (defined once: invoicing.figures).
FIGURES = [
    ("Billed", "billed", "Issued invoices: open, paid, refunded, failed, uncollectible"),
    ("Paid", "paid", "What customers paid, before refunds"),
    ("Outstanding", "outstanding", "Still due on open and failed invoices"),
    ("Failed", "failed", "Still due after a failed payment"),
    ("Refunded", "refunded", "Paid back to customers"),
    ("Credited", "credited", "Credits carried forward to the next invoice"),
    ("Credit notes", "credit_notes", "Taken back from issued invoices by credit notes"),
]


with ui.stop_on_error(), ui.db() as session:
    options = inv.filter_options(session)

if not options.periods:
    st.info("No invoices yet: run the invoicing for a month (Invoice run page or CLI).")
    st.stop()

ui.show_flash("inv_flash")
# Only the open tab is built and drawn (the other two cost as much as the list); the open tab
# is in the URL (?tab=Payment+methods), like the filters.
tab_invoices, tab_payments, tab_events = st.tabs(
    ["Invoices", "Payment methods", "Stripe events"], key="tab", bind="query-params"
)

# ---------------------------------------------------------------- invoices tab
# The filters sit inside the tab they filter; they live in the URL (?period=, ?status=,
# ?customer=, ?currency=, ?bucket=, ?overdue=1, ?q=, ?issued=, ?paid=, ?invoice=), so a
# reload or a pasted link shows the same invoices.
default_from = options.periods[max(0, len(options.periods) - 12)]
BINDINGS = [
    url_state.ordered_range(
        "inv_periods", "period", options.periods, (default_from, options.periods[-1])
    ),
    url_state.choices("inv_status", "status", list(inv.STATUSES)),
    url_state.choices("inv_customer", "customer", list(options.customers), cast=int),
    url_state.choices("inv_currency", "currency", options.currencies),
    url_state.choices("inv_bucket", "bucket", list(rcv.AGE_BUCKETS)),
    url_state.flag("inv_overdue", "overdue"),
    url_state.text("inv_search", "q"),
    url_state.date_range("inv_issued", "issued"),
    url_state.date_range("inv_paid", "paid"),
    url_state.text("inv_lookup", "invoice"),
]
url_state.restore("invoices", BINDINGS)
# The table's dates as text, so an empty one reads blank rather than "None".
TABLE_DATES = {"due": DAY, "next_attempt": DAY, "issued": DAY, "paid_at": DAY}
as_of = utcnow()

if tab_invoices.open:
    with tab_invoices:
        f1, f2, f3, f4 = st.columns([2.2, 1.4, 2.2, 1])
        if len(options.periods) > 1:
            # `value` makes it a range slider; the URL's range is in its session state already.
            periods: Any = f1.select_slider(
                "Periods", options=options.periods, value=BINDINGS[0].default, key="inv_periods"
            )
            period_from, period_to = periods
        else:
            period_from = period_to = options.periods[0]
            f1.caption(f"Period {period_from}")
        statuses = f2.multiselect(
            "Status", inv.STATUSES, format_func=status_label, key="inv_status", placeholder="All"
        )
        customer_ids = f3.multiselect(
            "Customer",
            list(options.customers),
            format_func=lambda cid: options.customers.get(cid, str(cid)),
            key="inv_customer",
            placeholder="All",
        )
        currencies = f4.multiselect(
            "Currency", options.currencies, key="inv_currency", placeholder="All"
        )
        g1, g2, g3, g4, g5 = st.columns([1.8, 1.4, 1.3, 2.25, 2.25], vertical_alignment="bottom")
        search = g1.text_input(
            "Search",
            key="inv_search",
            placeholder="Number, customer, email or amount (123.45)",
            help="Part of the invoice number, the customer's name or email, or the exact total.",
        )
        buckets = g2.multiselect(
            "Days past due",
            rcv.AGE_BUCKETS,
            format_func=lambda b: rcv.BUCKET_LABELS[b],
            key="inv_bucket",
            placeholder="All",
            help="Invoices still owing, by how late they are (current: not yet due).",
        )
        overdue = g3.checkbox("Overdue only", key="inv_overdue")
        issued = g4.date_input("Issued between", value=[], key="inv_issued", format="YYYY-MM-DD")
        paid_on = g5.date_input("Paid between", value=[], key="inv_paid", format="YYYY-MM-DD")
        issued_from, issued_to = url_state.range_ends(issued)
        paid_from, paid_to = url_state.range_ends(paid_on)
        selection = inv.InvoiceFilter(
            period_from=period_from,
            period_to=period_to,
            statuses=tuple(statuses),
            customer_ids=tuple(customer_ids),
            currencies=tuple(currencies),
            buckets=tuple(buckets),
            overdue=overdue,
            search=search,
            issued_from=issued_from,
            issued_to=issued_to,
            paid_from=paid_from,
            paid_to=paid_to,
            as_of=as_of,
        )

        with ui.stop_on_error(), ui.db() as session:
            figures = inv.headline_figures(session, selection)
            monthly = inv.monthly_billed(session, selection)
            total_count = inv.count_invoices(session, selection)
            table = inv.invoice_table(session, selection, now=as_of)

        if not figures:
            st.info("No invoice matches these filters.")
        for fig in figures:
            # Three figures a row: amounts in the thousands stay readable instead of truncated.
            st.markdown(
                f"**{fig.currency}** · {fig.count:,} invoice{'' if fig.count == 1 else 's'}"
            )
            for start in range(0, len(FIGURES), 3):
                cols = st.columns(3)
                for col, (label, attr, meaning) in zip(
                    cols, FIGURES[start : start + 3], strict=False
                ):
                    col.metric(
                        f"{label} · {fig.currency}",
                        ui.fmt(getattr(fig, attr), fig.currency),
                        help=meaning,
                    )
            left_out = [
                f"{what} {ui.fmt(amount, fig.currency)}"
                for what, amount in (("void", fig.void), ("uncollectible", fig.uncollectible))
                if amount
            ]
            if left_out:
                st.caption(f"Not in billed or outstanding: {', '.join(left_out)}.")

        if not monthly.empty:
            st.plotly_chart(inv.billed_chart(monthly), key="inv_chart")

        d1, d2, _ = st.columns([1, 1, 3])
        d1.download_button(
            "Invoices CSV",
            data=exports.csv_builder(ui.engine(), selection, exports.write_invoices_csv),
            file_name=selection.file_name("invoices"),
            mime="text/csv",
            on_click="ignore",
            icon=":material/download:",
            key="dl_invoices",
        )
        d2.download_button(
            "Invoice lines CSV",
            data=exports.csv_builder(ui.engine(), selection, exports.write_lines_csv),
            file_name=selection.file_name("invoice-lines"),
            mime="text/csv",
            on_click="ignore",
            icon=":material/download:",
            key="dl_lines",
        )

        if total_count > len(table):
            st.caption(
                f"Showing the newest {len(table):,} of {total_count:,} invoices; "
                "the CSV holds all of them."
            )
        # Links and what is owed come first: at 1440 px they must not scroll off to the right.
        event = st.dataframe(
            blank_missing(table, TABLE_DATES, counts=["days_past_due"]),
            hide_index=True,
            key="inv_table",
            on_select="rerun",
            selection_mode="single-row",
            column_order=[
                "number",
                "customer",
                "period",
                "status",
                "total",
                "paid",
                "due",
                "days_past_due",
                "invoice_url",
                "pdf_url",
                "next_attempt",
                "refunded",
                "attempts",
                "issued",
                "paid_at",
            ],
            column_config={
                "number": st.column_config.TextColumn("Number"),
                "customer": st.column_config.TextColumn("Customer"),
                "period": st.column_config.TextColumn("Period"),
                "status": st.column_config.TextColumn("Status"),
                "total": st.column_config.TextColumn("Total", help="In the invoice's currency"),
                "paid": st.column_config.TextColumn("Paid"),
                "due": st.column_config.TextColumn("Due"),
                "days_past_due": st.column_config.TextColumn(
                    "Days late",
                    help="Days past the due date, on invoices still owing",
                    alignment="right",
                ),
                "invoice_url": st.column_config.LinkColumn(
                    "Stripe", display_text="Open", width="small"
                ),
                "pdf_url": st.column_config.LinkColumn("PDF", display_text="PDF", width="small"),
                "next_attempt": st.column_config.TextColumn(
                    "Next attempt", help="Empty: no retry scheduled"
                ),
                "refunded": st.column_config.TextColumn("Refunded"),
                "attempts": st.column_config.NumberColumn("Attempts", format="%d"),
                "issued": st.column_config.TextColumn("Issued"),
                "paid_at": st.column_config.TextColumn("Paid on"),
            },
        )

        # ------------------------------------------------------------ detail
        st.subheader("Invoice detail")
        lookup = st.text_input(
            "Invoice number or id",
            key="inv_lookup",
            placeholder="Select a row above, or type e.g. DEMO-2026-09-0001",
        )
        rows = event.selection.rows if event is not None else []
        chosen: int | None = int(table.iloc[rows[0]]["id"]) if rows else None
        # The open invoice goes in the URL (?invoice=), so a reload or a pasted link reopens it.
        opened = str(table.iloc[rows[0]]["number"]) if rows else lookup.strip()
        if opened.startswith("(local #"):
            opened = str(chosen)
        url_state.publish("invoices", BINDINGS, {"invoice": opened})
        try:
            with ui.db() as session:
                if chosen is None and lookup:
                    chosen = inv.find_invoice(session, lookup)
                    if chosen is None:
                        st.warning(f"No invoice {lookup!r}: check the number.")
                detail = inv.invoice_detail(session, chosen) if chosen is not None else None
                panel = (
                    corrections_view.corrections_panel(session, detail.invoice) if detail else None
                )
        except Exception as exc:
            ui.show_error(exc)
            detail = panel = None

        if detail is not None:
            i = detail.invoice
            cur = i.currency
            st.markdown(
                f"### {i.number or f'Local invoice #{i.id}'} · {detail.customer} · {i.period}"
            )
            # Money three to a row: a total in the tens of thousands is read whole at 1440 px.
            m1, m2, m3 = st.columns(3)
            m1.metric("Total", ui.fmt(i.total_minor, cur))
            m2.metric("Paid", ui.fmt(i.amount_paid_minor, cur))
            m3.metric("Refunded", ui.fmt(i.amount_refunded_minor, cur))
            n1, n2, n3 = st.columns(3)
            n1.metric("Status", status_label(i.display_status, i.credit_state))
            late = inv.days_late(i, as_of)
            n2.metric(
                "Due",
                f"{i.due_at:%Y-%m-%d}" if i.due_at else "No due date",
                delta=f"{late} days past due" if late else None,
                delta_color="inverse",
            )
            n3.metric("Attempts", f"{i.attempt_count:d}")
            if i.display_status == DisplayStatus.FAILED:
                st.warning(f"{i.last_error or 'Payment failed.'} {inv.retry_text(i, as_of)}")
            links = [
                f"[Stripe invoice]({i.hosted_invoice_url})" if i.hosted_invoice_url else "",
                f"[PDF]({i.invoice_pdf})" if i.invoice_pdf else "",
            ]
            if any(links):
                st.markdown(" · ".join(link for link in links if link))
            elif i.is_demo:
                st.caption("Demo record: not a Stripe invoice, so there is no hosted page or PDF.")
            if is_admin and i.display_status in pm.RETRYABLE:
                st.button(
                    "Retry payment",
                    key="inv_retry",
                    on_click=ui.retry_payment,
                    args=("inv_flash", identity, i.id),
                    disabled=not i.stripe_invoice_id,
                    help="Charges the default payment method again (audited).",
                )
            st.markdown("**Lines**")
            st.dataframe(
                detail.lines.drop(columns=["amount_minor"]),
                hide_index=True,
                column_config=ui.headers(
                    detail.lines.columns,
                    position=st.column_config.NumberColumn("#", format="%d"),
                    unit_amount=f"Unit amount ({cur})",
                    amount=st.column_config.TextColumn(f"Amount ({cur})"),
                ),
                key="inv_lines",
            )
            if panel is not None:
                corrections.render(i, panel, identity)
            left, right = st.columns(2)
            left.markdown("**Payment attempts**")
            if detail.attempts:
                left.dataframe(
                    [
                        {"at": a.at, "outcome": a.outcome, "detail": a.detail}
                        for a in detail.attempts
                    ],
                    hide_index=True,
                    key="inv_attempts",
                    column_config=ui.headers(["at", "outcome", "detail"]),
                )
            else:
                left.caption("No payment attempt recorded.")
            right.markdown("**Timeline**")
            right.dataframe(
                [{"at": t.at, "source": t.source, "what": t.what} for t in detail.timeline],
                hide_index=True,
                key="inv_timeline",
                column_config=ui.headers(["at", "source", "what"]),
            )

        # ------------------------------------------------------------ failed payments
        st.subheader("Failed payments")
        with ui.stop_on_error(), ui.db() as session:
            failed = inv.invoice_table(
                session, inv.InvoiceFilter(statuses=(DisplayStatus.FAILED,)), now=utcnow()
            )
        if failed.empty:
            st.caption("No failed payments.")
        else:
            st.dataframe(
                blank_missing(
                    failed[["number", "customer", "period", "total", "attempts", "next_attempt"]],
                    {"next_attempt": MINUTE},
                ),
                hide_index=True,
                key="inv_failed",
                column_config={
                    "number": st.column_config.TextColumn("Number"),
                    "customer": st.column_config.TextColumn("Customer"),
                    "period": st.column_config.TextColumn("Period"),
                    "total": st.column_config.TextColumn("Total"),
                    "attempts": st.column_config.NumberColumn("Attempts", format="%d"),
                    "next_attempt": st.column_config.TextColumn(
                        "Next attempt (UTC)", help="Empty: no retry scheduled"
                    ),
                },
            )
            st.caption(
                "Open an invoice above to see its attempts; admins can retry the payment there."
            )

# ---------------------------------------------------------------- payment methods tab
if tab_payments.open:
    with tab_payments:
        with ui.stop_on_error(), ui.db() as session:
            methods = inv.payment_method_table(session)
        missing = methods[
            (~methods["has_payment_method"]) & (methods["collection"] != "send invoice")
        ]
        if not missing.empty:
            st.warning(
                "Charged automatically but no payment method on file: "
                + ", ".join(missing["customer"])
            )
        st.dataframe(
            methods,
            hide_index=True,
            key="pm_table",
            column_config={
                **ui.headers(methods.columns),
                "id": None,
                "has_payment_method": st.column_config.CheckboxColumn("Payment method"),
                "type": st.column_config.TextColumn("Type"),
                "last4": st.column_config.TextColumn("Last 4"),
                "failed_invoices": st.column_config.NumberColumn("Failed invoices", format="%d"),
                "in_stripe": st.column_config.CheckboxColumn("In Stripe"),
            },
        )
        if is_admin:
            st.markdown("**Send a card setup link**")
            names = dict(zip(methods["id"], methods["customer"], strict=True))
            target = st.selectbox(
                "Customer", list(names), format_func=lambda cid: names[cid], key="pm_customer"
            )
            if st.button("Create setup link", key="pm_setup"):
                ui.show_setup_link(identity, int(target))

# ---------------------------------------------------------------- events tab
if tab_events.open:
    with tab_events:
        outcome = st.selectbox(
            "Outcome",
            [None, *EventOutcome],
            format_func=lambda o: "All" if o is None else o,
            key="ev_outcome",
        )
        with ui.stop_on_error(), ui.db() as session:
            tab = inv.events_tab(session, outcome=outcome)
            cursor = sync.get_cursor(session)
        st.caption(
            f"Sync cursor: {cursor or 'not set (no sync yet)'} · {tab.pending} stored event(s) "
            "waiting to be applied. Ignored events are types this tool does not act on."
        )
        if tab.failed:
            giving_up = sum(1 for e in tab.failed if e.next_attempt_at is None)
            st.error(
                f"{len(tab.failed)} Stripe event(s) failed to apply ({giving_up} no longer "
                "retried): the local invoices they concern may be out of date. `sync` retries "
                "the others with backoff and exits 1 until they apply."
            )
            st.dataframe(
                [
                    {
                        "id": e.id,
                        "type": e.type,
                        "attempts": e.attempts,
                        "next attempt": when_text(e.next_attempt_at),  # blank: given up
                        "error": e.error or "",
                    }
                    for e in tab.failed
                ],
                hide_index=True,
                key="ev_failed",
                column_config=ui.headers(
                    ["id", "type", "attempts", "next attempt", "error"], id="Id"
                ),
            )
        st.dataframe(
            tab.rows,
            hide_index=True,
            key="ev_table",
            column_config=ui.headers(
                ["created", "type", "id", "source", "outcome", "attempts", "next_attempt", "note"]
            ),
        )
