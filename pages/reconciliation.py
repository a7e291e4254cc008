"""Reconciliation: what we billed vs Stripe, AWS and usage; admins resolve the differences.

A resolution names the diff by id and the version this page showed (its widgets are keyed by the
diff's id), so a click from a stale page is refused with a sentence, never applied to another.
"""

import streamlit as st

from billing_core.auth import Identity
from billing_core.costs.snapshots import CostSource
from billing_core.invoicing.drafts import SharedCosts
from billing_core.periods import Period, utcnow
from billing_core.reconciliation import act, resolve
from billing_core.reconciliation import runs as reconciliation_runs
from billing_core.reconciliation.diffing import KINDS, Tolerance
from billing_core.states import ReconciliationStatus
from billing_core.views import reconciliation as reconcile_view
from pages.common import ui, url_state

identity = ui.page_setup("Reconciliation")
ACTION_LABELS = {
    "accept": "Accept with a note",
    "true_up": "Schedule a true-up on the next invoice",
    "sync": "Sync the status from Stripe",
    "credit_note": "Issue a credit note for the difference",
    "reissue": "Void and reissue the invoice",
    "push": "Push the invoice to Stripe",
}
SETTLEMENTS = {
    None: "Unpaid invoice: lower what is due",
    "refund": "Paid: refund to the payment method",
    "customer_balance": "Paid: credit the customer's balance",
    "out_of_band": "Paid: settled outside Stripe",
}


def ask_resolution(diff_id: int, seen_version: int) -> None:
    # A callback runs before the rerun with the diff and version its button was drawn for:
    # what the admin saw, whatever the list of open diffs holds by the time the page reruns.
    st.session_state["resolve_request"] = (
        diff_id,
        seen_version,
        st.session_state.get(f"resolve_action-{diff_id}", "accept"),
        st.session_state.get(f"resolve_note-{diff_id}", ""),
        st.session_state.get(f"resolve_settlement-{diff_id}"),
    )


def apply_resolution(
    who: Identity,
    diff_id: int,
    seen_version: int,
    action: str,
    note: str,
    settlement: str | None = None,
) -> None:
    try:
        with ui.db() as session:
            kind = reconcile_view.diff_kind(session, diff_id)
        if action in act.STRIPE_ACTIONS or (action == "sync" and kind == "credit_notes"):
            st.session_state["reconcile_message"] = act.act_on_diff(
                ui.engine(),
                reconciliation_runs.make_reader(ui.settings()),
                who,
                diff_id,
                action,
                seen_version=seen_version,
                note=note or None,
                settlement=settlement,
                source=CostSource.of(ui.settings()),
                shared=SharedCosts.of(ui.settings()),
            )
            return
        with ui.db() as session:
            if action == "accept":
                resolve.accept_diff(session, who, diff_id, note, seen_version=seen_version)
                message = f"Difference #{diff_id} accepted."
            elif action == "true_up":
                t = resolve.schedule_true_up(session, who, diff_id, note, seen_version=seen_version)
                message = (
                    f"True-up scheduled: '{t.description}' "
                    f"{ui.fmt(t.amount_minor, t.currency)} on the next invoice."
                )
            else:
                reader = reconciliation_runs.make_reader(ui.settings())
                resolve.sync_from_stripe(
                    session, who, diff_id, seen_version=seen_version, reader=reader
                )
                message = f"Difference #{diff_id} synced from Stripe."
        st.session_state["reconcile_message"] = message
        # Done: the note is cleared (the widgets are not drawn yet in this run).
        st.session_state[f"resolve_note-{diff_id}"] = ""
    except Exception as exc:
        st.session_state["reconcile_error"] = exc


if identity.can("admin") and (request := st.session_state.pop("resolve_request", None)):
    apply_resolution(identity, *request)  # before the page reads its data

with ui.stop_on_error(), ui.db() as session:
    periods = reconciliation_runs.periods_with_diffs(session)

# ---------------------------------------------------------------- filters
# Kept in the URL (?month=, ?kind=, ?status=, ?within=1): a reload or a link shows the same diffs.
BINDINGS = [
    url_state.one("period", "month", ["All months", *periods], "All months"),
    url_state.choices("kinds", "kind", list(KINDS)),
    url_state.choices("statuses", "status", list(reconcile_view.STATUSES), default=["open"]),
    url_state.flag("within", "within"),
]
url_state.restore("reconciliation", BINDINGS)
with st.sidebar:
    st.subheader("Filters")
    period_choice = st.selectbox("Month", ["All months", *periods], key="period")
    kinds = st.multiselect(
        "Kind", list(KINDS), key="kinds", format_func=reconciliation_runs.kind_label
    )
    statuses = st.multiselect("Status", list(reconcile_view.STATUSES), key="statuses")
    within = st.checkbox("Show differences within tolerance", key="within")
url_state.publish("reconciliation", BINDINGS)
period = None if period_choice == "All months" else period_choice

with ui.stop_on_error(), ui.db() as session:
    head = reconcile_view.headline(session, period)
    summary = reconcile_view.summary_frame(session, period)
    trend = reconcile_view.trend_figure(session)
    table = reconcile_view.diff_frame(
        session,
        utcnow(),
        period=period,
        kinds=kinds,
        statuses=statuses,
        include_within_tolerance=within,
    )
    runs = reconcile_view.run_rows(reconciliation_runs.runs(session, limit=20))
    # The resolve list offers only the open rows the table shows.
    open_diffs = reconcile_view.resolvable(session, period, ids=[int(i) for i in table["id"]])

tolerance_pct = ui.settings().reconcile_tolerance_pct
st.caption(
    f"Tolerance: {tolerance_pct} % of the larger amount, never less than one minor unit. "
    "Differences within it are counted, not raised."
)

# ---------------------------------------------------------------- metrics
c1, c2, c3, c4 = st.columns(4)
c1.metric("Open above tolerance", head.open_above)
c2.metric("Within tolerance", head.within_tolerance)
c3.metric("Resolved", head.resolved)
if head.last_run is not None:
    last = head.last_run
    # The month alone is the value (it fits a quarter of the page); the status goes below.
    # A section that did not run (Stripe not configured, no cost snapshot) is said here: a
    # "complete" run that never compared with Stripe must not read as a clean one.
    notes = (last.counts or {}).get("notes") or []
    skipped = [note for note in notes if "skipped" in note]  # other notes only inform
    c4.metric(
        "Last run",
        last.period,
        delta=f"{last.status} · {last.started_at:%Y-%m-%d %H:%M} UTC",
        delta_color="off",
        delta_arrow="off",
        help=f"by {last.actor}, {last.stripe_requests} Stripe requests"
        + "".join(f"; {note}" for note in notes),
    )
    for note in skipped:
        st.warning(f"The last run of {last.period} left a part out: {note}.")
else:
    c4.metric("Last run", "none yet")

# ---------------------------------------------------------------- charts and summary
left, right = st.columns([1, 1])
with left:
    st.subheader("Open differences by month")
    if summary.empty:
        st.info("No differences recorded yet: run a reconciliation.")
    else:
        st.plotly_chart(trend, key="trend")
with right:
    st.subheader("By kind")
    if summary.empty:
        # An empty table would stay a grey placeholder box, never drawn.
        st.caption("No differences to count yet.")
    else:
        st.dataframe(
            summary,
            hide_index=True,
            key="summary",
            column_config={
                # Pixel widths: all six columns fit half the page at 1440 px.
                "period": st.column_config.TextColumn("Month", width=70),
                "kind": st.column_config.TextColumn("Kind", width=130),
                "open": st.column_config.NumberColumn(
                    "Open", width=55, help="Open, above the tolerance"
                ),
                "within tolerance": st.column_config.NumberColumn(
                    "Within", width=60, help="Within the tolerance: counted, not raised"
                ),
                "resolved": st.column_config.NumberColumn("Resolved", width=75),
                "gone": st.column_config.NumberColumn(
                    "Gone", width=55, help="No longer found by a later run"
                ),
            },
        )

# ---------------------------------------------------------------- the diff table
st.subheader("Differences")
if table.empty:
    st.success("No differences match the filters.")
else:
    st.dataframe(
        table,
        hide_index=True,
        key="diffs",
        # What differs comes before the detail, so the delta is on screen at 1440 px.
        column_order=[
            "id",
            "period",
            "kind",
            "customer",
            "subject",
            "delta",
            "local",
            "remote",
            "status",
            "age (days)",
            "resolution",
        ],
        column_config=ui.headers(
            table.columns,
            id=st.column_config.NumberColumn("#", width="small"),
            key=None,  # the stable internal key: for the tests and the log, not for people
            local=st.column_config.TextColumn("Local (what we billed)"),
            remote=st.column_config.TextColumn("Remote (Stripe, AWS, usage)"),
            delta=st.column_config.TextColumn("Delta (remote − local)"),
            **{"age (days)": st.column_config.NumberColumn("Age (days)", format="%d")},
        ),
    )

with st.expander("Runs"):
    st.dataframe(
        runs, hide_index=True, key="runs", column_config=ui.headers(runs.columns, run="Run")
    )

# ---------------------------------------------------------------- admin: resolve, run
if identity.can("admin"):
    st.subheader("Resolve a difference")
    if not open_diffs:
        st.caption("Nothing open to resolve.")
    else:
        by_id = {d.id: d for d in open_diffs}
        diff_id = st.selectbox(
            "Difference",
            list(by_id),
            format_func=lambda i: by_id[i].label,
            key="resolve_diff",
        )
        shown = by_id[diff_id]
        chosen_action = st.radio(
            "Resolution",
            reconcile_view.actions_for(shown.kind, shown.delta_minor),
            format_func=lambda a: ACTION_LABELS[a],
            key=f"resolve_action-{diff_id}",
            horizontal=True,
        )
        if chosen_action == "credit_note":
            st.selectbox(
                "Where the credit goes",
                list(SETTLEMENTS),
                format_func=lambda k: SETTLEMENTS[k],
                key=f"resolve_settlement-{diff_id}",
            )
        st.text_input("Note (required to accept)", key=f"resolve_note-{diff_id}")
        st.button(
            "Apply resolution",
            key=f"resolve_apply-{diff_id}",
            type="primary",
            on_click=ask_resolution,
            args=(shown.id, shown.version),
        )
    if message := st.session_state.pop("reconcile_message", None):
        st.success(message)
    if (error := st.session_state.pop("reconcile_error", None)) is not None:
        ui.show_error(error)

    st.subheader("Run a reconciliation")
    default = Period.containing(utcnow()).previous()
    with st.form("run_form"):
        run_period = st.text_input("Month (YYYY-MM)", value=str(default), key="run_period")
        submitted = st.form_submit_button("Reconcile")
    if submitted:
        try:
            with st.spinner("Comparing with Stripe, AWS costs and usage..."):
                result = reconciliation_runs.reconcile_period(
                    ui.engine(),
                    Period.parse(run_period),
                    source=CostSource.of(ui.settings()),
                    tolerance=Tolerance(tolerance_pct),
                    reader=reconciliation_runs.make_reader(ui.settings()),
                    actor=identity.actor,
                    shared=SharedCosts.of(ui.settings()),
                )
            complete = result.status == ReconciliationStatus.COMPLETE
            st.session_state["run_result"] = (complete, "\n\n".join(result.describe()))
        except Exception as exc:
            ui.show_error(exc)
        else:
            # Draw the page again, so "Last run", the figures and the table include this run.
            st.rerun()
    if (outcome := st.session_state.pop("run_result", None)) is not None:
        complete, text = outcome
        (st.success if complete else st.error)(text)
