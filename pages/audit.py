"""Audit log (admin): every recorded action, filterable, with CSV export."""

import streamlit as st

from billing_core import audit
from pages.common import ui

identity = ui.page_setup("Audit log", "admin")

TABLE_LIMIT = 1000

with ui.stop_on_error(), ui.db() as session:
    choices = audit.filter_choices(session)

if choices.first is None or choices.last is None:
    st.info(
        "Nothing has been recorded yet: admin actions (imports, runs, resolutions) appear here."
    )
    st.stop()

c1, c2, c3, c4 = st.columns([2, 2, 2, 3])
actor = c1.selectbox("Who", ["Everyone", *choices.actors])
action = c2.selectbox("Action", ["All actions", *choices.actions])
days = c3.date_input(
    "Days (UTC)",
    value=(choices.first.date(), choices.last.date()),
    min_value=choices.first.date(),
    max_value=choices.last.date(),
)
target = c4.text_input("Target contains", placeholder="customer:12, 2026-10, inv_…")

# While a range is being picked the widget holds one day only.
picked = list(days) if isinstance(days, (list, tuple)) else [days]
filters = audit.AuditFilter(
    actor=None if actor == "Everyone" else actor,
    action=None if action == "All actions" else action,
    first_day=picked[0] if picked else None,
    last_day=picked[-1] if picked else None,
    target_contains=target or None,
)

with ui.stop_on_error(), ui.db() as session:
    found = filters.search(session, limit=TABLE_LIMIT + 1)
    rows = audit.table_rows(found[:TABLE_LIMIT])
    details = {e.id: audit.changes(e) for e in found[:TABLE_LIMIT]}


def export_csv() -> bytes:
    # Built when clicked, from all entries matching the filters (the table shows at most 1000).
    with ui.db() as session:
        return audit.to_csv(filters.search(session, limit=None))


more = len(found) > TABLE_LIMIT
st.caption(
    f"{'The newest ' + str(TABLE_LIMIT) if more else len(rows)} matching entries, newest first."
    + (" The CSV export holds all of them." if more else "")
)
st.download_button(
    "Export CSV",
    data=export_csv,
    file_name=filters.file_name(),
    mime="text/csv",
    icon=":material/download:",
    disabled=not rows,
    on_click="ignore",
)
st.dataframe(
    rows,
    hide_index=True,
    column_config={
        "id": st.column_config.TextColumn("#", width="small"),
        "at": st.column_config.TextColumn("When"),
        "actor": st.column_config.TextColumn("Who"),
        "action": st.column_config.TextColumn("Action"),
        "target": st.column_config.TextColumn("Target"),
        "before": st.column_config.TextColumn("Before", width="medium"),
        "after": st.column_config.TextColumn("After", width="medium"),
    },
)

if rows:
    st.subheader("Changes in one entry")
    labels = {int(r["id"]): f"#{r['id']} {r['at']} {r['action']} {r['target']}" for r in rows}
    chosen = st.selectbox("Entry", list(labels), format_func=labels.__getitem__)
    changed = details.get(chosen, [])
    if changed:
        st.table([{"field": f, "before": b, "after": a} for f, b, a in changed])
    else:
        st.caption("This entry records no field changes.")
