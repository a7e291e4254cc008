"""Invoice run (admin): preview a closed month, run it, watch progress, see results."""

import streamlit as st

from billing_core.costs.snapshots import CostSource
from billing_core.invoicing import run_worker
from billing_core.invoicing.drafts import SharedCosts, describe_shared
from billing_core.invoicing.run_lock import lock_name, lock_status
from billing_core.invoicing.runs import preview, test_cards_allowed
from billing_core.periods import utcnow
from billing_core.states import RunStatus
from billing_core.views import invoice_run as run_view
from billing_core.views.common_text import MINUTE, blank_missing
from pages.common import ui

# How often the progress panel re-reads the run while it is active.
POLL_SECONDS = 1.5

identity = ui.page_setup("Invoice run", "admin")
cfg = ui.settings()
now = utcnow()

periods = run_view.closed_periods(now)
period = st.selectbox("Month to invoice", periods, format_func=str, key="run_period")
with ui.stop_on_error():
    held = lock_status(ui.engine(), lock_name(str(period)), now, cfg.run_lock_stale_seconds)
if held:
    st.caption(f"Run lock for {period}: {held}.")

left, right = st.columns(2)
if left.button("Preview", icon=":material/visibility:"):
    st.session_state["preview_of"] = str(period)
attach = False
if test_cards_allowed(cfg):
    attach = right.checkbox(
        "Give new Stripe customers a test card (local Stripe emulator)",
        value=cfg.mode == "demo",  # the demo's customers pay with it when their invoice is run
        key="attach_cards",
    )
if not cfg.stripe_enabled:
    right.caption("Running needs Stripe: set STRIPE_API_KEY (or STRIPE_API_BASE for an emulator).")
run_clicked = right.button(
    f"Run invoicing for {period}",
    type="primary",
    icon=":material/play_arrow:",
    disabled=not cfg.stripe_enabled,
)

if run_clicked:
    # The preview was of the drafts this run bills: once run, it would show an empty block.
    st.session_state.pop("preview_of", None)
    try:
        with ui.db() as session:
            run = run_worker.request_run(
                session,
                identity=identity,
                period=period,
                now=now,
                stale_seconds=cfg.run_lock_stale_seconds,
            )
            run_id = run.id or 0
            fresh = run.status == RunStatus.REQUESTED
        if fresh:
            run_worker.start_in_background(ui.engine(), cfg, run_id, attach_test_cards=attach)
            st.toast(f"Run {run_id} started for {period}.")
        else:
            st.info(f"Run {run_id} for {period} is already {run.status}; showing its progress.")
    except Exception as exc:
        ui.show_error(exc)

if st.session_state.get("preview_of") == str(period):
    st.subheader(f"Preview of {period}")
    with ui.stop_on_error(), ui.db() as session:
        drafts = preview(session, period, source=CostSource.of(cfg), shared=SharedCosts.of(cfg))
    if not drafts.costs_found:
        st.warning(f"No AWS costs to bill: {drafts.cost_coverage}.")
    else:
        st.caption(f"AWS costs: {drafts.cost_coverage}.")
    if drafts.shared is not None and drafts.shared.pool:
        st.caption(describe_shared(drafts.shared) + ".")
    if drafts.costs_incomplete:
        st.warning(
            f"This cost snapshot was taken before {period} ended. The run fetches {period} "
            "again from Cost Explorer first; if it cannot, it refuses the customers with AWS "
            f"costs: run `python -m billing_core fetch-costs --period {period} --force`."
        )
    if drafts.costs_estimated:
        st.warning("AWS still marks this month's costs as estimated; invoices will say so.")
    frame = run_view.preview_frame(drafts)
    if frame.empty:
        # Nothing to draft or refuse (e.g. the month was just run): a sentence, not an empty
        # table and a "Drafts 0" figure.
        st.caption(f"No invoice to draft for {period}.")
    else:
        totals = drafts.totals_by_currency()
        cols = st.columns(max(1, len(totals) + 1))
        cols[0].metric("Drafts", len(drafts.drafts))
        for col, (cur, minor) in zip(cols[1:], sorted(totals.items()), strict=True):
            col.metric(f"Total {cur}", ui.fmt(minor, cur))
        st.dataframe(
            # A month without a cost snapshot has no as-of time: a blank cell, not "None".
            blank_missing(frame, {"costs as of": MINUTE}),
            hide_index=True,
            column_config=ui.headers(
                ["customer", "currency", "total", "lines", "collection", "days covered"],
                **{
                    "costs as of": st.column_config.TextColumn("Costs as of (UTC)"),
                    "warnings": st.column_config.TextColumn("Warnings", width="large"),
                },
            ),
        )
    if drafts.already_invoiced:
        st.caption("Already invoiced for this month: " + ", ".join(drafts.already_invoiced))
    if drafts.drafts:
        st.markdown("**How each line is priced**")
        names = [d.customer_name for d in drafts.drafts]
        shown = st.selectbox("Customer", names, key="explain_customer")
        draft = drafts.drafts[names.index(shown)]
        st.dataframe(
            run_view.lines_frame(draft),
            hide_index=True,
            width="stretch",
            column_order=["line", "amount", "cost at AWS rates", "rule applied"],
            column_config={
                "line": st.column_config.TextColumn("line", width="medium"),
                "amount": st.column_config.TextColumn("amount", width="small"),
                "cost at AWS rates": st.column_config.TextColumn(
                    "cost at AWS rates", width="small"
                ),
                "rule applied": st.column_config.TextColumn("rule applied", width="medium"),
            },
        )
        st.caption(f"Total {ui.fmt(draft.total_minor, draft.currency)}: the sum of the lines.")


@st.fragment(run_every=POLL_SECONDS)
def progress_panel() -> None:
    with ui.stop_on_error(), ui.db() as session:
        run = run_view.current_run(session, period)
    if run is None:
        st.caption(f"No run for {period} yet.")
        return
    st.subheader(f"Run {run.id}: {run.status}")
    total = max(run.total_count, 1)
    st.progress(
        min(run.done_count + run.failed_count, total) / total if run.total_count else 0.0,
        text=f"{run.done_count} of {run.total_count} invoices pushed, {run.failed_count} failed",
    )
    if run.costs_estimated:
        st.caption("This run billed costs AWS still marked as estimated.")
    for err in run.errors[-10:]:
        who = err.get("customer") or err.get("step", "")
        st.error(f"{who}: {err.get('message')}")
    if (
        run.status in (RunStatus.RUNNING, RunStatus.REQUESTED)
        and st.session_state.get("watching") != run.id
    ):
        st.session_state["watching"] = run.id
    elif run.status in run_view.FINISHED and st.session_state.get("watching") == run.id:
        st.session_state["watching"] = None
        st.rerun()  # refresh the results table once the run is over


progress_panel()

st.subheader(f"Invoices for {period}")
with ui.stop_on_error(), ui.db() as session:
    results = run_view.results_frame(session, period)
    history = run_view.history_frame(run_worker.run_history(session))
if results.empty:
    st.caption("No invoices for this month yet.")
else:
    st.dataframe(
        results,
        hide_index=True,
        column_config=ui.headers(
            results.columns,
            stripe=st.column_config.LinkColumn("Stripe", display_text="open invoice"),
            message=st.column_config.TextColumn("Message", width="large"),
        ),
    )

st.subheader("Run history")
st.dataframe(history, hide_index=True, column_config=ui.headers(history.columns))
