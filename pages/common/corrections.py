"""The invoice detail's corrections panel (Invoices page): credit notes of the invoice, and for
admins the forms that credit it (previewed by Stripe first), void one of its credit notes, or
void and reissue it. The work is billing_core.corrections'; this module only draws and calls it."""

from __future__ import annotations

import streamlit as st

from billing_core.auth import Identity
from billing_core.corrections import credit_notes
from billing_core.corrections.credit_note_void import void_credit_note
from billing_core.corrections.credit_plan import CreditAsk, Mode
from billing_core.corrections.void_reissue import void_invoice
from billing_core.costs.snapshots import CostSource
from billing_core.invoicing.drafts import SharedCosts
from billing_core.models import Invoice
from billing_core.states import CreditNoteReason, CreditSettlement
from billing_core.views.corrections import CorrectionsPanel
from pages.common import ui

_WHAT: dict[str, Mode] = {"The whole invoice": "full", "One line": "line", "An amount": "amount"}
_WHERE = {
    CreditSettlement.REFUND: "Refund to the payment method",
    CreditSettlement.CUSTOMER_BALANCE: "Credit the customer's balance (next invoice)",
    CreditSettlement.OUT_OF_BAND: "Settled outside Stripe",
}


def _flash(key: str) -> None:
    flash = st.session_state.pop(key, None)
    if flash is None:
        return
    kind, text = flash
    (st.success if kind == "success" else st.info)(text)


def _credit_form(invoice: Invoice, panel: CorrectionsPanel, identity: Identity) -> None:
    iid = invoice.id or 0
    ref = invoice.number or f"#{iid}"
    with st.form(f"cn_form_{iid}", border=True):
        c1, c2, c3 = st.columns([1.2, 1, 1])
        what = c1.radio("Credit", list(_WHAT), key=f"cn_what_{iid}", horizontal=False)
        labels = dict(panel.lines)
        line = c2.selectbox(
            "Line (for one line)",
            list(labels),
            format_func=lambda n: labels[n],
            key=f"cn_line_{iid}",
        )
        amount = c2.text_input(
            f"Amount ({invoice.currency})", key=f"cn_amount_{iid}", placeholder="e.g. 12.50"
        )
        quantity = c2.number_input(
            "or a quantity of the line", min_value=0, step=1, key=f"cn_qty_{iid}"
        )
        reason = c3.selectbox(
            "Reason",
            [r.value for r in CreditNoteReason],
            format_func=lambda r: r.replace("_", " "),
            key=f"cn_reason_{iid}",
        )
        settlement = None
        if panel.paid:
            settlement = c3.radio(
                "The invoice is paid: the credit goes",
                list(_WHERE),
                format_func=_WHERE.get,
                key=f"cn_where_{iid}",
            )
        memo = st.text_input("Memo (printed on the credit note)", key=f"cn_memo_{iid}")
        b1, b2, _ = st.columns([1, 1, 3])
        preview = b1.form_submit_button("Preview in Stripe")
        issue = b2.form_submit_button("Issue credit note", type="primary")
    if not (preview or issue):
        return
    mode = _WHAT[what]
    by_quantity = mode == "line" and int(quantity or 0) > 0
    ask = CreditAsk(
        invoice=ref,
        mode=mode,
        reason=reason,
        amount=None if mode == "full" or by_quantity else amount,
        line=line if mode == "line" else None,
        quantity=int(quantity) if by_quantity else None,
        settlement=settlement.value if settlement else None,
        memo=memo or None,
    )
    try:
        gateway = ui.stripe_gateway()
        _plan, text = credit_notes.preview(ui.engine(), gateway, ask)
        if preview:
            st.info(f"Stripe's preview: {text}. Nothing is issued until you click Issue.")
            return
        result = credit_notes.issue(ui.engine(), gateway, identity, ask)
        st.session_state["cn_flash"] = ("success" if result.changed else "info", result.message)
        st.rerun()
    except Exception as exc:
        ui.show_error(exc)


def _void_form(invoice: Invoice, identity: Identity) -> None:
    iid = invoice.id or 0
    with st.form(f"void_form_{iid}", border=True):
        reason = st.text_input("Why (kept in the audit log)", key=f"void_reason_{iid}")
        reissue = st.checkbox(
            "Reissue: bill the month again with today's costs, usage and pricing",
            value=True,
            key=f"void_reissue_{iid}",
        )
        sure = st.checkbox("Void it in Stripe (this cannot be undone)", key=f"void_sure_{iid}")
        go = st.form_submit_button("Void invoice", type="primary")
    if not go:
        return
    if not sure:
        st.warning("Tick the box to confirm the void.")
        return
    try:
        result = void_invoice(
            ui.engine(),
            ui.stripe_gateway(),
            identity,
            invoice.number or f"#{iid}",
            reason,
            reissue=reissue,
            source=CostSource.of(ui.settings()),
            shared=SharedCosts.of(ui.settings()),
        )
        st.session_state["cn_flash"] = ("success" if result.changed else "info", result.message)
        st.rerun()
    except Exception as exc:
        ui.show_error(exc)


def _void_note_form(note_id: int, text: str, identity: Identity) -> None:
    """One issued credit note: what voiding it does, the confirmation box and its Void button."""
    with st.form(f"cn_void_form_{note_id}", border=False):
        st.markdown(text)
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        sure = c1.checkbox(
            "Void it in Stripe (this cannot be undone)", key=f"cn_void_sure_{note_id}"
        )
        go = c2.form_submit_button("Void", key=f"cn_void_{note_id}")
    if not go:
        return
    if not sure:
        st.warning("Tick the box to confirm the void.")
        return
    try:
        result = void_credit_note(ui.engine(), ui.stripe_gateway(), identity, f"#{note_id}")
        st.session_state["cn_flash"] = ("success" if result.changed else "info", result.message)
        st.rerun()
    except Exception as exc:
        ui.show_error(exc)


def render(invoice: Invoice, panel: CorrectionsPanel, identity: Identity) -> None:
    """Credit notes of `invoice`, its credit state and revisions; admins get the actions."""
    st.markdown("**Credit notes and corrections**")
    _flash("cn_flash")
    st.caption(panel.credit_text)
    if panel.revision_text:
        st.caption(panel.revision_text)
    if panel.void_text:
        st.caption(panel.void_text)
    if not panel.notes.empty:
        st.dataframe(
            panel.notes,
            hide_index=True,
            key=f"cn_table_{invoice.id}",
            column_config={
                "issued": st.column_config.DatetimeColumn("Issued", format="YYYY-MM-DD HH:mm"),
                "pdf": st.column_config.LinkColumn("PDF", display_text="PDF"),
            },
        )
    if not identity.can("admin"):
        return
    if panel.voidable:
        with st.expander("Void a credit note"):
            for note_id, text in panel.voidable:
                _void_note_form(note_id, text, identity)
    if panel.can_credit:
        with st.expander("Issue a credit note"):
            _credit_form(invoice, panel, identity)
    if panel.can_void:
        with st.expander("Void (and reissue) this invoice"):
            _void_form(invoice, identity)
