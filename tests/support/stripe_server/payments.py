"""Paying invoices: payment intents, charges (declined by declining test cards), invoice
payments and refunds."""

from __future__ import annotations

import copy

from . import currencies
from .common import JSON, StripeAPIError, _invalid, _missing, _state_error
from .params import _as_bool, _as_int, _as_str, _check_unknown, _created_filter, _merge_metadata
from .routing import _Request, route
from .state import ServerState

# Stripe's error code and message for each decline code of the test cards.
DECLINES: dict[str, tuple[str, str]] = {
    "generic_decline": ("card_declined", "Your card was declined."),
    "insufficient_funds": ("card_declined", "Your card has insufficient funds."),
    "expired_card": ("expired_card", "Your card has expired."),
}


class PaymentsMixin(ServerState):
    """``/v1/invoices/{id}/pay``, ``/v1/invoice_payments``, charges, payment intents, refunds."""

    def _payments_list(self, invoice_id: str) -> JSON:
        payments = self._invoice_payments.get(invoice_id, [])
        return {
            "object": "list",
            "data": copy.deepcopy(payments),
            "has_more": False,
            "url": f"/v1/invoice_payments?invoice={invoice_id}",
        }

    def _default_payment(self, inv: JSON, pm: JSON) -> JSON:
        """The PaymentIntent of the invoice's default invoice payment, made at the first
        attempt. Like Stripe, every retry of the invoice goes through this same PaymentIntent
        (a new charge each time); its `last_payment_error` says why the last attempt failed."""
        for payment in self._invoice_payments[inv["id"]]:
            if payment["is_default"] and payment["status"] == "open":
                found = self._objects[payment["payment"]["payment_intent"]]
                found["payment_method"] = pm["id"]
                return found
        now = self._now()
        pi: JSON = {
            "id": self._new_id("pi"),
            "object": "payment_intent",
            "amount": inv["amount_remaining"],
            "amount_received": 0,
            "capture_method": "automatic",
            "created": now,
            "currency": inv["currency"],
            "customer": inv["customer"],
            "description": f"Payment for Invoice {inv['number']}",
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": {},
            "payment_method": pm["id"],
            "payment_method_types": ["card"],
            "status": "requires_payment_method",
        }
        self._store(pi)
        self._invoice_payments[inv["id"]].append(
            {
                "id": self._new_id("inpay"),
                "object": "invoice_payment",
                "amount_paid": None,
                "amount_requested": inv["amount_remaining"],
                "created": now,
                "currency": inv["currency"],
                "invoice": inv["id"],
                "is_default": True,
                "livemode": False,
                "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
                "status": "open",
                "status_transitions": {"canceled_at": None, "paid_at": None},
            }
        )
        return pi

    def _mark_paid(self, inv: JSON, *, out_of_band: bool, charge: JSON | None = None) -> None:
        now = self._now()
        amount = int(inv["amount_remaining"])
        inv["status"] = "paid"
        inv["amount_paid"] = int(inv["amount_paid"]) + amount
        if out_of_band:
            inv["amount_paid_off_stripe"] = int(inv.get("amount_paid_off_stripe") or 0) + amount
        inv["amount_remaining"] = 0
        inv["status_transitions"]["paid_at"] = now
        inv["next_payment_attempt"] = None
        inv["auto_advance"] = False
        paid_by = charge["payment_intent"] if charge is not None else None
        for payment in self._invoice_payments[inv["id"]]:
            if payment["payment"]["payment_intent"] == paid_by:
                payment["status"] = "paid"
                payment["amount_paid"] = amount
                payment["status_transitions"]["paid_at"] = now
            elif payment["status"] == "open":  # paid another way: the open attempt is dropped
                payment["status"] = "canceled"
                payment["status_transitions"]["canceled_at"] = now
        self._emit("invoice.paid", inv)
        if charge is not None:
            self._emit("invoice.payment_succeeded", inv)

    def _new_charge(self, inv: JSON, pm: JSON, decline_code: str | None) -> tuple[JSON, JSON]:
        now = self._now()
        ok = decline_code is None
        pi = self._default_payment(inv, pm)
        if ok:
            pi["amount_received"] = inv["amount_remaining"]
            pi["status"] = "succeeded"
            pi["last_payment_error"] = None
        ch: JSON = {
            "id": self._new_id("ch"),
            "object": "charge",
            "amount": inv["amount_remaining"],
            "amount_captured": inv["amount_remaining"] if ok else 0,
            "amount_refunded": 0,
            "balance_transaction": self._new_id("txn") if ok else None,
            "billing_details": copy.deepcopy(pm["billing_details"]),
            "captured": ok,
            "created": now,
            "currency": inv["currency"],
            "customer": inv["customer"],
            "description": pi["description"],
            "disputed": False,
            "failure_code": None if ok else DECLINES[str(decline_code)][0],
            "failure_message": None if ok else DECLINES[str(decline_code)][1],
            "livemode": False,
            "metadata": {},
            "outcome": {
                "network_status": "approved_by_network" if ok else "declined_by_network",
                "reason": None if ok else decline_code,
                "risk_level": "normal",
                "seller_message": "Payment complete."
                if ok
                else "The bank did not return any further details.",
                "type": "authorized" if ok else "issuer_declined",
            },
            "paid": ok,
            "payment_intent": pi["id"],
            "payment_method": pm["id"],
            "payment_method_details": {
                "card": {
                    k: pm["card"][k]
                    for k in (
                        "brand",
                        "country",
                        "exp_month",
                        "exp_year",
                        "fingerprint",
                        "funding",
                        "last4",
                    )
                },
                "type": "card",
            },
            "receipt_url": f"{self.url if self._httpd else 'http://127.0.0.1'}/receipts/{inv['id']}",
            "refunded": False,
            "refunds": {
                "object": "list",
                "data": [],
                "has_more": False,
                "url": "/v1/refunds",
            },
            "status": "succeeded" if ok else "failed",
        }
        pi["latest_charge"] = ch["id"]
        self._store(ch)
        return pi, ch

    @route("POST", "/v1/invoices/{id}/pay")
    def _h_invoice_pay(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        p = req.params
        _check_unknown(
            p, ("payment_method", "paid_out_of_band", "off_session", "forgive", "source", "mandate")
        )
        if inv["status"] == "paid":
            raise _state_error("Invoice is already paid", "invoice_already_paid")
        if inv["status"] == "void":
            raise _state_error(
                "This invoice has been voided and can no longer be paid.", "invoice_not_editable"
            )
        if inv["status"] == "draft":  # Stripe finalizes a draft before paying it
            self._finalize(inv)
            if inv["status"] == "paid":
                return 200, self._render(inv)
        if "paid_out_of_band" in p and _as_bool(p["paid_out_of_band"], "paid_out_of_band"):
            self._mark_paid(inv, out_of_band=True)
            return 200, self._render(inv)
        cus = self._objects[inv["customer"]]
        pm_id = (
            p.get("payment_method")
            or inv["default_payment_method"]
            or cus["invoice_settings"]["default_payment_method"]
        )
        if not pm_id:
            raise _state_error(
                "This customer has no attached payment source or default payment method. "
                "Please consider adding a default payment method. For more information, visit "
                "https://docs.stripe.com/billing/invoices/payment-methods.",
                "invoice_no_payment_method",
            )
        pm = self._get(pm_id, "payment_method", param="payment_method")
        if pm["customer"] != inv["customer"]:
            raise _invalid(
                "The payment method must be attached to the invoice's customer.", "payment_method"
            )
        too_small = currencies.minimum_problem(int(inv["amount_remaining"]), inv["currency"])
        if too_small is not None:
            raise _state_error(too_small, "amount_too_small", "amount")
        decline = pm.get("_decline_code")
        pi, ch = self._new_charge(inv, pm, decline)
        inv["attempt_count"] += 1
        inv["attempted"] = True
        if decline is None:
            self._emit("charge.succeeded", ch)
            self._mark_paid(inv, out_of_band=False, charge=ch)
            return 200, self._render(inv)
        now = self._now()
        # Stripe schedules retries (Smart Retries) only while auto_advance is on.
        inv["next_payment_attempt"] = now + 3 * 86400 if inv["auto_advance"] else None
        error_fields: JSON = {
            "charge": ch["id"],
            "decline_code": decline,
            "payment_method": self._render(pm),
        }
        code, message = DECLINES[decline]
        pi["last_payment_error"] = {
            "charge": ch["id"],
            "code": code,
            "decline_code": decline,
            "message": message,
            "payment_method": self._render(pm),
            "payment_method_type": "card",
            "type": "card_error",
        }
        error_fields["payment_intent"] = self._render(pi)
        self._emit("charge.failed", ch)
        self._emit("payment_intent.payment_failed", pi)
        self._emit("invoice.payment_failed", inv)
        raise StripeAPIError(
            402,
            message,
            type_="card_error",
            code=code,
            extra=error_fields,
            store=True,
        )

    @route("GET", "/v1/invoice_payments")
    def _h_invoice_payments(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        _check_unknown(
            req.params, ("invoice", "limit", "starting_after", "ending_before", "payment", "status")
        )
        if "invoice" not in req.params:
            raise _missing("invoice")
        inv = self._get(_as_str(req.params["invoice"], "invoice"), "invoice", param="invoice")
        return 200, self._payments_list(inv["id"])

    @route("GET", "/v1/payment_intents/{id}")
    def _h_payment_intent_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "payment_intent"))

    @route("GET", "/v1/charges/{id}")
    def _h_charge_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "charge"))

    @route("GET", "/v1/charges")
    def _h_charge_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p, ("customer", "payment_intent", "created", "limit", "starting_after", "ending_before")
        )
        created = _created_filter(p["created"], "created") if "created" in p else None

        def keep(o: JSON) -> bool:
            return (
                ("customer" not in p or o["customer"] == p["customer"])
                and ("payment_intent" not in p or o["payment_intent"] == p["payment_intent"])
                and (created is None or created(o["created"]))
            )

        return 200, self._page(self._of_type("charge"), keep, p, "/v1/charges")

    @route("POST", "/v1/refunds")
    def _h_refund_create(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p, ("charge", "payment_intent", "amount", "reason", "metadata", "instructions_email")
        )
        if "charge" in p and "payment_intent" in p:
            raise _invalid("You may only specify one of charge and payment_intent.", "charge")
        if "charge" in p:
            ch = self._get(_as_str(p["charge"], "charge"), "charge", param="charge")
        elif "payment_intent" in p:
            pi = self._get(
                _as_str(p["payment_intent"], "payment_intent"),
                "payment_intent",
                param="payment_intent",
            )
            if not pi.get("latest_charge") or pi["status"] != "succeeded":
                raise _state_error(
                    "This PaymentIntent does not have a successful charge to refund.",
                    "charge_not_refundable",
                    "payment_intent",
                )
            ch = self._objects[pi["latest_charge"]]
        else:
            raise _missing("charge")
        reason = p.get("reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            raise _invalid(f"Invalid reason: {reason}", "reason")
        amount = _as_int(p["amount"], "amount") if "amount" in p else None
        refund = self._refund_charge(ch, amount, reason, p.get("metadata") or {})
        return 200, self._render(refund)

    def _refund_charge(
        self, ch: JSON, amount: int | None, reason: str | None, metadata: JSON
    ) -> JSON:
        """Refund ``amount`` (None: all that is left) of a charge; emits charge.refunded."""
        if ch["status"] != "succeeded":
            raise _state_error(
                "This charge cannot be refunded because it has not succeeded.",
                "charge_not_refundable",
            )
        remaining = int(ch["amount"]) - int(ch["amount_refunded"])
        if remaining <= 0:
            raise _state_error(
                f"Charge {ch['id']} has already been refunded.", "charge_already_refunded"
            )
        amount = remaining if amount is None else amount
        if amount <= 0:
            raise _invalid("Refund amount must be positive", "amount")
        if amount > remaining:
            raise _state_error(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                "amount_too_large",
                "amount",
            )
        refund: JSON = {
            "id": self._new_id("re"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": self._new_id("txn"),
            "charge": ch["id"],
            "created": self._now(),
            "currency": ch["currency"],
            "metadata": _merge_metadata({}, metadata),
            "payment_intent": ch["payment_intent"],
            "reason": reason,
            "receipt_number": None,
            "status": "succeeded",
        }
        self._store(refund)
        previous = {"amount_refunded": ch["amount_refunded"], "refunded": ch["refunded"]}
        ch["amount_refunded"] = int(ch["amount_refunded"]) + amount
        ch["refunded"] = ch["amount_refunded"] >= ch["amount"]
        ch["refunds"]["data"].insert(0, copy.deepcopy(refund))
        self._emit("charge.refunded", ch, previous)
        return refund

    def _paid_charge(self, inv: JSON) -> JSON | None:
        """The charge that paid an invoice through Stripe (None: paid out of band or unpaid)."""
        for payment in self._invoice_payments.get(inv["id"], []):
            if payment["status"] == "paid":
                pi = self._objects.get(payment["payment"]["payment_intent"])
                if pi is not None and pi.get("latest_charge"):
                    return self._objects[pi["latest_charge"]]
        return None

    @route("GET", "/v1/refunds/{id}")
    def _h_refund_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "refund"))

    # ------------------------------------------------------------ snapshots and out-of-band helpers

    def charges(self) -> list[JSON]:
        return self._list_of("charge")

    def refunds(self) -> list[JSON]:
        return self._list_of("refund")

    def pay_out_of_band(self, invoice_id: str) -> JSON:
        """Mark an invoice paid outside Stripe (emits invoice.paid)."""
        with self._lock:
            inv = self._get(invoice_id, "invoice")
            if inv["status"] == "draft":
                self._finalize(inv)
            if inv["status"] not in ("open", "uncollectible"):
                raise ValueError(f"cannot pay an invoice in status {inv['status']}")
            self._mark_paid(inv, out_of_band=True)
            return self._render(inv)
