"""Invoices: create, update, delete, list, search, finalize, send, void, mark uncollectible.

Lines live in invoice_lines.py, paying in payments.py.
"""

from __future__ import annotations

import re

from .common import JSON, _copy_json, _invalid, _missing, _state_error
from .params import _as_bool, _as_int, _as_str, _check_unknown, _created_filter, _merge_metadata
from .routing import _Request, route
from .state import ServerState

EMBEDDED_LINES = 10  # Stripe embeds the first 10 lines in an invoice object


class InvoicesMixin(ServerState):
    """``/v1/invoices`` and an invoice's life from draft to paid, void or uncollectible."""

    _INVOICE_CREATE_FIELDS = (
        "customer", "currency", "auto_advance", "collection_method", "days_until_due", "due_date",
        "description", "metadata", "pending_invoice_items_behavior", "footer",
        "default_payment_method",
        "statement_descriptor", "automatic_tax", "custom_fields", "payment_settings", "rendering",
        "account_tax_ids", "default_tax_rates", "effective_at", "number", "issuer", "on_behalf_of",
        "shipping_cost", "shipping_details", "transfer_data", "application_fee_amount", "discounts",
        "from_invoice", "subscription", "customer_account",
    )  # fmt: skip

    def _new_invoice(self, cus: JSON, p: JSON) -> JSON:
        now = self._now()
        currency = (p.get("currency") or cus.get("currency") or "usd").lower()
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise _invalid(f"Invalid currency: {currency}", "currency")
        method = p.get("collection_method") or "charge_automatically"
        if method not in ("charge_automatically", "send_invoice"):
            raise _invalid(f"Invalid collection_method: {method}", "collection_method")
        days = _as_int(p["days_until_due"], "days_until_due") if "days_until_due" in p else None
        due_date = _as_int(p["due_date"], "due_date") if "due_date" in p else None
        if method == "charge_automatically" and (days is not None or due_date is not None):
            raise _invalid(
                "Invoices with `collection_method=charge_automatically` cannot have "
                "`days_until_due` or `due_date` set.",
                "days_until_due" if days is not None else "due_date",
            )
        if method == "send_invoice" and days is None and due_date is None:
            raise _invalid(
                "Invoices with `collection_method=send_invoice` must have either "
                "`days_until_due` or `due_date` set.",
                "days_until_due",
            )
        behavior = p.get("pending_invoice_items_behavior", "exclude")
        if behavior not in ("exclude", "include"):
            raise _invalid(
                f"Invalid pending_invoice_items_behavior: {behavior}",
                "pending_invoice_items_behavior",
            )
        auto_advance = _as_bool(p["auto_advance"], "auto_advance") if "auto_advance" in p else False
        default_pm = p.get("default_payment_method") or None
        if default_pm:
            pm = self._get(default_pm, "payment_method", param="default_payment_method")
            if pm["customer"] != cus["id"]:
                raise _invalid(
                    "The payment method must be attached to the customer.", "default_payment_method"
                )
        inv: JSON = {
            "id": self._new_id("in"),
            "object": "invoice",
            "account_country": "US",
            "account_name": "Local Stripe Test Account",
            "account_tax_ids": None,
            "amount_due": 0,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": auto_advance,
            "automatic_tax": {
                "disabled_reason": None,
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "automatically_finalizes_at": now + 3600 if auto_advance else None,
            "billing_reason": "manual",
            "collection_method": method,
            "created": now,
            "currency": currency,
            "custom_fields": None,
            "customer": cus["id"],
            "customer_address": cus.get("address"),
            "customer_email": cus.get("email"),
            "customer_name": cus.get("name"),
            "customer_phone": cus.get("phone"),
            "customer_shipping": cus.get("shipping"),
            "customer_tax_exempt": cus.get("tax_exempt"),
            "customer_tax_ids": [],
            "default_payment_method": default_pm,
            "default_source": None,
            "default_tax_rates": [],
            "description": p.get("description") or None,
            "discounts": [],
            "due_date": due_date,
            "effective_at": None,
            "ending_balance": None,
            "footer": p.get("footer") or None,
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "livemode": False,
            "metadata": _merge_metadata({}, p.get("metadata") or {}),
            "next_payment_attempt": None,
            "number": None,
            "on_behalf_of": None,
            "parent": None,
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "period_end": now,
            "period_start": now,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": p.get("statement_descriptor") or None,
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subtotal": 0,
            "subtotal_excluding_tax": 0,
            "test_clock": None,
            "total": 0,
            "total_discount_amounts": [],
            "total_excluding_tax": 0,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": None,
            "_days_until_due": days,
        }
        self._store(inv)
        self._invoice_lines[inv["id"]] = []
        self._invoice_payments[inv["id"]] = []
        self._emit("invoice.created", inv)
        return inv

    def _render_invoice(self, inv: JSON) -> JSON:
        out = {k: _copy_json(v) for k, v in inv.items() if not k.startswith("_")}
        lines = self._invoice_lines.get(inv["id"], [])
        out["lines"] = {
            "object": "list",
            "data": _copy_json(lines[:EMBEDDED_LINES]),
            "has_more": len(lines) > EMBEDDED_LINES,  # Stripe sends no count: page on to learn it
            "url": f"/v1/invoices/{inv['id']}/lines",
        }
        return out

    @route("POST", "/v1/invoices")
    def _h_invoice_create(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(p, self._INVOICE_CREATE_FIELDS)
        if "customer" not in p:
            raise _missing("customer")
        cus = self._get(_as_str(p["customer"], "customer"), "customer", param="customer")
        inv = self._new_invoice(cus, p)
        return 200, self._render(inv)

    @route("GET", "/v1/invoices/{id}")
    def _h_invoice_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "invoice"))

    @route("POST", "/v1/invoices/{id}")
    def _h_invoice_update(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        p = req.params
        _check_unknown(
            p,
            (
                "metadata",
                "description",
                "auto_advance",
                "days_until_due",
                "due_date",
                "footer",
                "default_payment_method",
                "collection_method",
                "statement_descriptor",
            ),
        )
        draft_only = {
            "collection_method",
            "days_until_due",
            "due_date",
            "default_payment_method",
        } & set(p)
        if inv["status"] != "draft" and draft_only:
            raise _state_error(
                f"Finalized invoices can't be updated in this way ({sorted(draft_only)[0]}).",
                "invoice_not_editable",
                sorted(draft_only)[0],
            )
        if inv["status"] in ("paid", "void") and set(p) - {"metadata", "expand"}:
            raise _state_error(
                f"This invoice is {inv['status']}; only metadata can be updated.",
                "invoice_not_editable",
            )
        previous: JSON = {}
        if "metadata" in p:
            previous["metadata"] = inv["metadata"]
            inv["metadata"] = _merge_metadata(inv["metadata"], p["metadata"])
        for name in ("description", "footer", "statement_descriptor"):
            if name in p:
                previous[name] = inv[name]
                inv[name] = p[name] or None
        if "auto_advance" in p:
            previous["auto_advance"] = inv["auto_advance"]
            inv["auto_advance"] = _as_bool(p["auto_advance"], "auto_advance")
        if "collection_method" in p:
            if p["collection_method"] not in ("charge_automatically", "send_invoice"):
                raise _invalid("Invalid collection_method", "collection_method")
            previous["collection_method"] = inv["collection_method"]
            inv["collection_method"] = p["collection_method"]
        if "days_until_due" in p:
            inv["_days_until_due"] = _as_int(p["days_until_due"], "days_until_due")
        if "due_date" in p:
            previous["due_date"] = inv["due_date"]
            inv["due_date"] = _as_int(p["due_date"], "due_date")
        if "default_payment_method" in p:
            previous["default_payment_method"] = inv["default_payment_method"]
            inv["default_payment_method"] = p["default_payment_method"] or None
        if previous:
            self._emit("invoice.updated", inv, previous)
        return 200, self._render(inv)

    @route("DELETE", "/v1/invoices/{id}")
    def _h_invoice_delete(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        if inv["status"] != "draft":
            raise _state_error("You can only delete draft invoices.", "invoice_not_editable")
        snapshot = self._render(inv)
        self._deleted.add(inv["id"])
        event = self._emit("invoice.deleted", inv)
        event["data"]["object"] = snapshot
        return 200, {"id": inv["id"], "object": "invoice", "deleted": True}

    @route("GET", "/v1/invoices")
    def _h_invoice_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p,
            (
                "customer",
                "status",
                "collection_method",
                "created",
                "due_date",
                "limit",
                "starting_after",
                "ending_before",
                "subscription",
                "customer_account",
            ),
        )
        if "status" in p and p["status"] not in ("draft", "open", "paid", "uncollectible", "void"):
            raise _invalid(f"Invalid status: {p['status']}", "status")
        created = _created_filter(p["created"], "created") if "created" in p else None
        due = _created_filter(p["due_date"], "due_date") if "due_date" in p else None

        def keep(o: JSON) -> bool:
            return (
                o["id"] not in self._deleted
                and ("customer" not in p or o["customer"] == p["customer"])
                and ("status" not in p or o["status"] == p["status"])
                and (
                    "collection_method" not in p or o["collection_method"] == p["collection_method"]
                )
                and (created is None or created(o["created"]))
                and (due is None or (o["due_date"] is not None and due(o["due_date"])))
            )

        return 200, self._page(self._of_type("invoice"), keep, p, "/v1/invoices")

    @route("GET", "/v1/invoices/search")
    def _h_invoice_search(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        fields = {"customer", "status", "number", "total", "currency", "created", "subscription"}
        return 200, self._search("invoice", req.params, fields, "/v1/invoices/search")

    def _finalize(self, inv: JSON) -> None:
        now = self._now()
        cus = self._objects[inv["customer"]]
        inv["status"] = "open"
        inv["number"] = f"{cus['invoice_prefix']}-{cus['next_invoice_sequence']:04d}"
        cus["next_invoice_sequence"] += 1
        if cus.get("currency") is None:
            cus["currency"] = inv["currency"]
        inv["status_transitions"]["finalized_at"] = now
        inv["effective_at"] = now
        inv["automatically_finalizes_at"] = None
        inv["ending_balance"] = 0
        inv["customer_email"] = cus.get("email")
        inv["customer_name"] = cus.get("name")
        base = self.url if self._httpd is not None else "http://127.0.0.1"
        inv["hosted_invoice_url"] = f"{base}/i/{inv['id']}"
        inv["invoice_pdf"] = f"{base}/i/{inv['id']}/pdf"
        if inv["collection_method"] == "send_invoice" and inv["due_date"] is None:
            inv["due_date"] = now + 86400 * int(inv["_days_until_due"] or 0)
        if inv["collection_method"] == "charge_automatically" and inv["auto_advance"]:
            inv["next_payment_attempt"] = now + 3600
        self._recompute(inv)
        self._apply_balance(inv)  # a credit on the customer's balance pays what it can
        self._emit("invoice.finalized", inv)
        if inv["amount_due"] == 0:  # Stripe marks zero-amount invoices paid on finalization
            self._mark_paid(inv, out_of_band=False)

    @route("POST", "/v1/invoices/{id}/finalize")
    def _h_invoice_finalize(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        _check_unknown(req.params, ("auto_advance",))
        if inv["status"] != "draft":
            raise _state_error(
                "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                "invoice_not_editable",
            )
        if "auto_advance" in req.params:
            inv["auto_advance"] = _as_bool(req.params["auto_advance"], "auto_advance")
        self._finalize(inv)
        return 200, self._render(inv)

    @route("POST", "/v1/invoices/{id}/send")
    def _h_invoice_send(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        _check_unknown(req.params, ())
        if inv["collection_method"] != "send_invoice":
            raise _state_error(
                "You can only manually send an invoice if its collection method is 'send_invoice'.",
                "invoice_not_editable",
            )
        if inv["status"] == "draft":
            self._finalize(inv)
        if inv["status"] in ("void", "uncollectible"):
            raise _state_error(
                f"You can't send an invoice that is {inv['status']}.", "invoice_not_editable"
            )
        if inv["status"] == "open":
            self._emit("invoice.sent", inv)
        return 200, self._render(inv)

    def _void(self, inv: JSON) -> None:
        if inv["status"] not in ("open", "uncollectible"):
            raise _state_error(
                "You can only void invoices that are open or uncollectible; "
                f"this invoice is {inv['status']}.",
                "invoice_not_editable",
            )
        inv["status"] = "void"
        inv["status_transitions"]["voided_at"] = self._now()
        inv["amount_remaining"] = 0
        inv["next_payment_attempt"] = None
        inv["auto_advance"] = False
        self._emit("invoice.voided", inv)

    @route("POST", "/v1/invoices/{id}/void")
    def _h_invoice_void(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        _check_unknown(req.params, ())
        self._void(inv)
        return 200, self._render(inv)

    def _mark_uncollectible(self, inv: JSON) -> None:
        if inv["status"] != "open":
            raise _state_error(
                f"You can only mark open invoices uncollectible; this invoice is {inv['status']}.",
                "invoice_not_editable",
            )
        inv["status"] = "uncollectible"
        inv["status_transitions"]["marked_uncollectible_at"] = self._now()
        inv["next_payment_attempt"] = None
        inv["auto_advance"] = False
        self._emit("invoice.marked_uncollectible", inv)

    @route("POST", "/v1/invoices/{id}/mark_uncollectible")
    def _h_invoice_uncollectible(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        _check_unknown(req.params, ())
        self._mark_uncollectible(inv)
        return 200, self._render(inv)

    # ------------------------------------------------------------ snapshots and out-of-band helpers

    def invoices(self, customer: str | None = None, status: str | None = None) -> list[JSON]:
        """Snapshots of all invoices, oldest first."""
        return self._list_of(
            "invoice",
            lambda o: (
                (customer is None or o["customer"] == customer)
                and (status is None or o["status"] == status)
            ),
        )

    def invoice(self, invoice_id: str) -> JSON:
        with self._lock:
            return self._render(self._get(invoice_id, "invoice"))

    def void(self, invoice_id: str) -> JSON:
        with self._lock:
            inv = self._get(invoice_id, "invoice")
            self._void(inv)
            return self._render(inv)

    def mark_uncollectible(self, invoice_id: str) -> JSON:
        with self._lock:
            inv = self._get(invoice_id, "invoice")
            self._mark_uncollectible(inv)
            return self._render(inv)

    def create_invoice_directly(
        self,
        customer_id: str,
        amount: int,
        currency: str = "usd",
        metadata: dict[str, str] | None = None,
        *,
        status: str = "open",
        description: str = "Invoice created outside the billing tool",
        days_until_due: int | None = None,
        due_date: int | None = None,
    ) -> JSON:
        """An invoice made outside our tool: one line of ``amount``; status draft, open or paid.

        With ``days_until_due`` (due that many days after finalizing) or ``due_date`` (a Unix
        time) it is a send-invoice invoice.
        """
        if status not in ("draft", "open", "paid"):
            raise ValueError("status must be draft, open or paid")
        params: JSON = {
            "currency": currency,
            "metadata": metadata or {},
            "description": description,
        }
        if days_until_due is not None:
            params |= {"collection_method": "send_invoice", "days_until_due": days_until_due}
        elif due_date is not None:
            params |= {"collection_method": "send_invoice", "due_date": due_date}
        with self._lock:
            cus = self._get(customer_id, "customer")
            inv = self._new_invoice(cus, params)
            self._add_line(inv, {"amount": str(amount), "description": description}, "lines[0]")
            self._recompute(inv)
            if status in ("open", "paid"):
                self._finalize(inv)
            if status == "paid" and inv["status"] == "open":
                self._mark_paid(inv, out_of_band=True)
            return self._render(inv)
