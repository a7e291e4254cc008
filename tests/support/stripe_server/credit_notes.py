"""Credit notes (create, preview, list, retrieve, void) and customer balance transactions.

Stripe's rules, as its API reference states them for credit notes:
- only finalized invoices (open, paid, uncollectible) take credit notes;
- one of `amount` or `lines` is required (both: they must agree); the total is at most what is
  left to credit on the invoice (its total less earlier credit notes), and each invoice line at
  most its own amount less what earlier credit notes took from it;
- the credit first lowers the invoice's `amount_remaining` (and `amount_due`), not below zero:
  that is the note's `pre_payment_amount`; the rest is `post_payment_amount`, and
  `refund_amount + credit_amount + out_of_band_amount` must equal it (nothing given: all out of
  band); an open invoice whose amount remaining falls to zero is marked paid;
- `refund_amount` refunds the charge that paid the invoice; `credit_amount` goes to the
  customer's balance (a `credit_note` balance transaction), applied to the next invoice when it
  is finalized;
- voiding reverses the note's effect on the invoice and on the balance; a note with refunds
  cannot be voided (the money already went back), nor one whose lowered amount was then paid.
"""

from __future__ import annotations

import copy
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .common import JSON, _invalid, _missing, _state_error
from .params import (
    _as_decimal,
    _as_int,
    _as_list,
    _as_str,
    _check_unknown,
    _created_filter,
    _merge_metadata,
)
from .routing import _Request, route
from .state import ServerState

REASONS = ("duplicate", "fraudulent", "order_change", "product_unsatisfactory")
_CREATE_FIELDS = (
    "invoice", "amount", "credit_amount", "effective_at", "email_type", "lines", "memo",
    "metadata", "out_of_band_amount", "reason", "refund_amount", "refunds", "shipping_cost",
)  # fmt: skip
_LINE_FIELDS = (
    "amount", "description", "invoice_line_item", "metadata", "quantity", "tax_amounts",
    "tax_rates", "type", "unit_amount", "unit_amount_decimal",
)  # fmt: skip


class CreditNotesMixin(ServerState):
    """``/v1/credit_notes`` and ``/v1/customers/{id}/balance_transactions``."""

    # ------------------------------------------------------------ building a note

    def _credited_by_line(self, inv: JSON) -> dict[str, int]:
        """What issued credit notes already took from each invoice line (by line id)."""
        out: dict[str, int] = {}
        for cn in self._of_type("credit_note"):
            if cn["invoice"] != inv["id"]:
                continue
            if cn["status"] != "issued":
                continue
            for line in cn["lines"]["data"]:
                if line["invoice_line_item"]:
                    key = line["invoice_line_item"]
                    out[key] = out.get(key, 0) + int(line["amount"])
        return out

    def _note_line(self, inv: JSON, line: Any, param: str, taken: dict[str, int]) -> JSON:
        if not isinstance(line, dict):
            raise _invalid("Invalid hash", param)
        _check_unknown(line, _LINE_FIELDS, param)
        kind = line.get("type")
        if kind is None:
            raise _missing(f"{param}[type]")
        item: JSON = {
            "id": self._new_id("cnli"),
            "object": "credit_note_line_item",
            "amount": 0,
            "description": None,
            "discount_amount": 0,
            "discount_amounts": [],
            "invoice_line_item": None,
            "livemode": False,
            "metadata": _merge_metadata({}, line.get("metadata") or {}, f"{param}[metadata]"),
            "pretax_credit_amounts": [],
            "quantity": None,
            "tax_rates": [],
            "taxes": [],
            "type": kind,
            "unit_amount": None,
            "unit_amount_decimal": None,
        }
        if kind == "invoice_line_item":
            line_id = _as_str(line.get("invoice_line_item", ""), f"{param}[invoice_line_item]")
            lines = {li["id"]: li for li in self._invoice_lines.get(inv["id"], [])}
            if line_id not in lines:
                raise _invalid(
                    f"No such invoice line item: '{line_id}'",
                    f"{param}[invoice_line_item]",
                    "resource_missing",
                )
            source = lines[line_id]
            unit = Decimal(source["pricing"]["unit_amount_decimal"])
            if "amount" in line:
                amount = _as_int(line["amount"], f"{param}[amount]")
            elif "quantity" in line:
                qty = _as_int(line["quantity"], f"{param}[quantity]")
                if qty <= 0:
                    raise _invalid("quantity must be positive", f"{param}[quantity]")
                amount = int((unit * qty).quantize(Decimal(1), rounding=ROUND_HALF_UP))
                item["quantity"] = qty
            else:
                raise _invalid(
                    "One of `amount` or `quantity` is required for an invoice_line_item.",
                    f"{param}[amount]",
                )
            left = int(source["amount"]) - taken.get(line_id, 0)
            if amount > left:
                raise _invalid(
                    f"The credit amount for line item {line_id} ({amount}) is greater than "
                    f"the amount left to credit on it ({left}).",
                    f"{param}[amount]",
                )
            taken[line_id] = taken.get(line_id, 0) + amount
            item.update(
                invoice_line_item=line_id,
                description=source["description"],
                unit_amount=int(unit) if unit == unit.to_integral_value() else None,
                unit_amount_decimal=str(unit),
            )
        elif kind == "custom_line_item":
            qty = _as_int(line.get("quantity", 1), f"{param}[quantity]")
            if "unit_amount" in line:
                unit = Decimal(_as_int(line["unit_amount"], f"{param}[unit_amount]"))
            elif "unit_amount_decimal" in line:
                unit = _as_decimal(line["unit_amount_decimal"], f"{param}[unit_amount_decimal]")
            else:
                raise _missing(f"{param}[unit_amount]")
            if "description" not in line:
                raise _missing(f"{param}[description]")
            amount = int((unit * qty).quantize(Decimal(1), rounding=ROUND_HALF_UP))
            item.update(
                description=_as_str(line["description"], f"{param}[description]"),
                quantity=qty,
                unit_amount=int(unit) if unit == unit.to_integral_value() else None,
                unit_amount_decimal=str(unit),
            )
        else:
            raise _invalid(f"Invalid type: {kind}", f"{param}[type]")
        if amount <= 0:
            raise _invalid("The credit amount must be positive.", f"{param}[amount]")
        item["amount"] = amount
        return item

    def _build_credit_note(self, p: JSON) -> tuple[JSON, JSON, dict[str, int]]:
        """The note Stripe would issue for ``p`` (nothing stored), its invoice and the split
        of its post-payment amount: refund, credit (balance) and out of band."""
        _check_unknown(p, _CREATE_FIELDS)
        if "invoice" not in p:
            raise _missing("invoice")
        inv = self._get(_as_str(p["invoice"], "invoice"), "invoice", param="invoice")
        if inv["status"] not in ("open", "paid", "uncollectible"):
            raise _invalid(
                "Credit notes can only be created on finalized invoices (open, paid or "
                f"uncollectible); this invoice is {inv['status']}.",
                "invoice",
                "invoice_not_editable",
            )
        reason = p.get("reason")
        if reason is not None and reason not in REASONS:
            raise _invalid(f"Invalid reason: {reason}", "reason")
        taken = self._credited_by_line(inv)
        lines = [
            self._note_line(inv, line, f"lines[{i}]", taken)
            for i, line in enumerate(_as_list(p.get("lines", []), "lines"))
        ]
        if not lines and "amount" not in p:
            raise _invalid(
                "One of `amount`, `lines`, or `shipping_cost` must be provided.", "amount"
            )
        total = sum(int(li["amount"]) for li in lines)
        if "amount" in p:
            amount = _as_int(p["amount"], "amount")
            if lines and amount != total:
                raise _invalid(
                    f"The amount ({amount}) must equal the sum of the lines ({total}).", "amount"
                )
            if not lines:
                if amount <= 0:
                    raise _invalid("The credit note amount must be positive.", "amount")
                total = amount
                custom = {
                    "type": "custom_line_item",
                    "description": p.get("memo") or "Credit",
                    "unit_amount": str(amount),
                }
                lines = [self._note_line(inv, custom, "amount", taken)]
        left = int(inv["total"]) - int(inv["pre_payment_credit_notes_amount"])
        left -= int(inv["post_payment_credit_notes_amount"])
        if total > left:
            raise _invalid(
                f"The credit note amount ({total}) is greater than the amount left to credit "
                f"on invoice {inv['id']} ({left}).",
                "amount",
                "credit_note_amount_too_large",
            )
        remaining = int(inv["amount_remaining"]) if inv["status"] != "paid" else 0
        pre = min(total, remaining)
        post = total - pre
        split = {
            name: _as_int(p[name], name) if name in p else 0
            for name in ("refund_amount", "credit_amount", "out_of_band_amount")
        }
        if any(v < 0 for v in split.values()):
            raise _invalid("Amounts must not be negative.", "refund_amount")
        given = sum(split.values())
        if not any(name in p for name in split) and post > 0:
            split["out_of_band_amount"] = post
        elif given != post:
            raise _invalid(
                f"The sum of refund_amount, credit_amount and out_of_band_amount ({given}) "
                f"must equal the credit note's post-payment amount ({post}).",
                "refund_amount" if split["refund_amount"] else "credit_amount",
            )
        if split["refund_amount"]:
            charge = self._paid_charge(inv)
            if charge is None:
                raise _invalid(
                    "This invoice was not paid by a charge in Stripe, so nothing can be "
                    "refunded; use credit_amount or out_of_band_amount.",
                    "refund_amount",
                )
            unrefunded = int(charge["amount"]) - int(charge["amount_refunded"])
            if split["refund_amount"] > unrefunded:
                raise _invalid(
                    f"refund_amount ({split['refund_amount']}) is greater than what is left "
                    f"to refund on the invoice's charge ({unrefunded}).",
                    "refund_amount",
                )
        now = self._now()
        note_type = "mixed" if pre and post else ("pre_payment" if pre else "post_payment")
        for li in lines:
            li["livemode"] = False
        cn: JSON = {
            "id": self._new_id("cn"),
            "object": "credit_note",
            "amount": total,
            "amount_shipping": 0,
            "created": now,
            "currency": inv["currency"],
            "customer": inv["customer"],
            "customer_account": None,
            "customer_balance_transaction": None,
            "discount_amount": 0,
            "discount_amounts": [],
            "effective_at": _as_int(p["effective_at"], "effective_at")
            if "effective_at" in p
            else None,
            "invoice": inv["id"],
            "lines": {
                "object": "list",
                "data": lines,
                "has_more": False,
                "url": "/v1/credit_notes/preview/lines",
            },
            "livemode": False,
            "memo": p.get("memo") or None,
            "metadata": _merge_metadata({}, p.get("metadata") or {}),
            "number": "",
            "out_of_band_amount": split["out_of_band_amount"] or None,
            "pdf": "",
            "post_payment_amount": post,
            "pre_payment_amount": pre,
            "pretax_credit_amounts": [],
            "reason": reason,
            "refunds": [],
            "shipping_cost": None,
            "status": "issued",
            "subtotal": total,
            "subtotal_excluding_tax": total,
            "total": total,
            "total_excluding_tax": total,
            "total_taxes": [],
            "type": note_type,
            "voided_at": None,
        }
        return cn, inv, split

    # ------------------------------------------------------------ endpoints

    @route("GET", "/v1/credit_notes/preview")
    def _h_credit_note_preview(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        cn, _inv, _split = self._build_credit_note(req.params)
        cn["id"] = "cnpreview_" + cn["id"][3:]
        return 200, copy.deepcopy(cn)

    @route("POST", "/v1/credit_notes")
    def _h_credit_note_create(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        cn, inv, split = self._build_credit_note(req.params)
        count = sum(1 for o in self._of_type("credit_note") if o["invoice"] == inv["id"])
        cn["number"] = f"{inv['number']}-CN-{count + 1:02d}"
        base = self.url if self._httpd is not None else "http://127.0.0.1"
        cn["pdf"] = f"{base}/cn/{cn['id']}/pdf"
        cn["lines"]["url"] = f"/v1/credit_notes/{cn['id']}/lines"
        if split["refund_amount"]:
            charge = self._paid_charge(inv)
            assert charge is not None  # checked while building
            refund = self._refund_charge(charge, split["refund_amount"], None, {})
            cn["refunds"] = [
                {
                    "amount_refunded": split["refund_amount"],
                    "payment_record_refund": None,
                    "refund": refund["id"],
                    "type": "refund",
                }
            ]
        self._store(cn)
        if split["credit_amount"]:
            txn = self._balance_transaction(
                inv["customer"],
                -split["credit_amount"],
                inv["currency"],
                "credit_note",
                credit_note=cn["id"],
                invoice=inv["id"],
            )
            cn["customer_balance_transaction"] = txn["id"]
        previous = {
            "amount_remaining": inv["amount_remaining"],
            "pre_payment_credit_notes_amount": inv["pre_payment_credit_notes_amount"],
            "post_payment_credit_notes_amount": inv["post_payment_credit_notes_amount"],
        }
        inv["pre_payment_credit_notes_amount"] += cn["pre_payment_amount"]
        inv["post_payment_credit_notes_amount"] += cn["post_payment_amount"]
        inv["amount_due"] = int(inv["amount_due"]) - cn["pre_payment_amount"]
        inv["amount_remaining"] = int(inv["amount_remaining"]) - cn["pre_payment_amount"]
        self._emit("credit_note.created", cn)
        self._emit("invoice.updated", inv, previous)
        if inv["status"] in ("open", "uncollectible") and inv["amount_remaining"] == 0:
            self._mark_paid(inv, out_of_band=False)
        return 200, self._render(cn)

    @route("GET", "/v1/credit_notes")
    def _h_credit_note_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p,
            (
                "invoice",
                "customer",
                "customer_account",
                "created",
                "limit",
                "starting_after",
                "ending_before",
            ),
        )
        created = _created_filter(p["created"], "created") if "created" in p else None

        def keep(o: JSON) -> bool:
            return (
                ("invoice" not in p or o["invoice"] == p["invoice"])
                and ("customer" not in p or o["customer"] == p["customer"])
                and (created is None or created(o["created"]))
            )

        return 200, self._page(self._of_type("credit_note"), keep, p, "/v1/credit_notes")

    @route("GET", "/v1/credit_notes/{id}")
    def _h_credit_note_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "credit_note"))

    @route("POST", "/v1/credit_notes/{id}/void")
    def _h_credit_note_void(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        cn = self._get(args[0], "credit_note")
        _check_unknown(req.params, ())
        if cn["status"] != "issued":
            raise _state_error("This credit note is already void.", "credit_note_already_voided")
        if cn["refunds"]:
            raise _state_error(
                "A credit note with refunds cannot be voided.", "credit_note_not_voidable"
            )
        inv = self._objects[cn["invoice"]]
        if inv["status"] == "void":
            raise _state_error("The credit note's invoice is void.", "credit_note_not_voidable")
        if cn["pre_payment_amount"] and inv["status"] == "paid" and int(inv["amount_paid"]):
            # The amount it took off was then paid: giving it back would ask for money twice.
            raise _state_error(
                "This credit note lowered an amount that has since been paid; it cannot be voided.",
                "credit_note_not_voidable",
            )
        cn["status"] = "void"
        cn["voided_at"] = self._now()
        inv["pre_payment_credit_notes_amount"] -= cn["pre_payment_amount"]
        inv["post_payment_credit_notes_amount"] -= cn["post_payment_amount"]
        inv["amount_due"] = int(inv["amount_due"]) + cn["pre_payment_amount"]
        inv["amount_remaining"] = int(inv["amount_remaining"]) + cn["pre_payment_amount"]
        if inv["status"] == "paid" and inv["amount_remaining"] > 0:
            inv["status"] = "open"  # it was paid only by this credit note
            inv["status_transitions"]["paid_at"] = None
        if cn["customer_balance_transaction"]:
            txn = self._objects[cn["customer_balance_transaction"]]
            self._balance_transaction(
                cn["customer"],
                -int(txn["amount"]),
                cn["currency"],
                "credit_note",
                credit_note=cn["id"],
                invoice=inv["id"],
            )
        self._emit("credit_note.voided", cn)
        self._emit("invoice.updated", inv, {})
        return 200, self._render(cn)

    # ------------------------------------------------------------ customer balance

    def _balance_transaction(
        self,
        customer_id: str,
        amount: int,
        currency: str,
        kind: str,
        *,
        credit_note: str | None = None,
        invoice: str | None = None,
        description: str | None = None,
        metadata: JSON | None = None,
    ) -> JSON:
        """Move a customer's balance by ``amount`` (negative: credit the customer owns)."""
        cus = self._objects[customer_id]
        if cus.get("currency") not in (None, currency):
            raise _invalid(
                f"The customer's balance is in {cus['currency']}, not {currency}.", "currency"
            )
        cus["currency"] = currency
        previous = {"balance": cus["balance"]}
        cus["balance"] = int(cus["balance"]) + amount
        txn: JSON = {
            "id": self._new_id("cbtxn"),
            "object": "customer_balance_transaction",
            "amount": amount,
            "checkout_session": None,
            "created": self._now(),
            "credit_note": credit_note,
            "currency": currency,
            "customer": customer_id,
            "customer_account": None,
            "description": description,
            "ending_balance": cus["balance"],
            "invoice": invoice,
            "livemode": False,
            "metadata": _merge_metadata({}, metadata or {}),
            "type": kind,
        }
        self._store(txn)
        self._emit("customer.updated", cus, previous)
        return txn

    def _apply_balance(self, inv: JSON) -> None:
        """At finalization, the customer's balance pays what it can of the invoice (Stripe)."""
        cus = self._objects[inv["customer"]]
        balance = int(cus.get("balance") or 0)
        if balance == 0 or cus.get("currency") not in (None, inv["currency"]):
            return
        applied = max(balance, -int(inv["total"])) if balance < 0 else balance
        inv["starting_balance"] = applied
        self._recompute(inv)
        self._balance_transaction(
            cus["id"], -applied, inv["currency"], "applied_to_invoice", invoice=inv["id"]
        )
        inv["ending_balance"] = cus["balance"]

    @route("GET", "/v1/customers/{id}/balance_transactions")
    def _h_balance_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        cus = self._get(args[0], "customer")
        p = req.params
        _check_unknown(p, ("created", "invoice", "limit", "starting_after", "ending_before"))

        def keep(o: JSON) -> bool:
            return o["customer"] == cus["id"] and (
                "invoice" not in p or o["invoice"] == p["invoice"]
            )

        url = f"/v1/customers/{cus['id']}/balance_transactions"
        return 200, self._page(self._of_type("customer_balance_transaction"), keep, p, url)

    @route("POST", "/v1/customers/{id}/balance_transactions")
    def _h_balance_create(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        cus = self._get(args[0], "customer")
        p = req.params
        _check_unknown(p, ("amount", "currency", "description", "metadata"))
        if "amount" not in p:
            raise _missing("amount")
        if "currency" not in p:
            raise _missing("currency")
        amount = _as_int(p["amount"], "amount")
        txn = self._balance_transaction(
            cus["id"],
            amount,
            _as_str(p["currency"], "currency").lower(),
            "adjustment",
            description=p.get("description") or None,
            metadata=p.get("metadata") or {},
        )
        return 200, self._render(txn)

    @route("GET", "/v1/customers/{id}/balance_transactions/{id}")
    def _h_balance_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        txn = self._get(args[1], "customer_balance_transaction")
        if txn["customer"] != args[0]:
            raise _invalid(f"No such customer balance transaction: '{args[1]}'", "id")
        return 200, self._render(txn)

    # ------------------------------------------------------------ snapshots

    def credit_notes(self, invoice_id: str | None = None) -> list[JSON]:
        """Snapshots of all credit notes (of one invoice), oldest first."""
        return self._list_of(
            "credit_note", lambda o: invoice_id is None or o["invoice"] == invoice_id
        )

    def balance_transactions(self, customer_id: str) -> list[JSON]:
        return self._list_of("customer_balance_transaction", lambda o: o["customer"] == customer_id)
