"""Payment methods: Stripe's test cards, attach, detach, retrieve and list.

A test card token (``pm_card_visa``, ``pm_card_chargeDeclined``, ...) becomes a card payment
method when attached; its decline code (kept internal) makes charges on it fail.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass

from .common import JSON, _missing, _state_error
from .params import _as_str, _check_unknown
from .routing import _Request, route
from .state import ServerState


@dataclass(frozen=True)
class _TestCard:
    brand: str
    last4: str
    decline_code: str | None  # None: charges succeed
    funding: str = "credit"


TEST_CARDS: dict[str, _TestCard] = {
    "pm_card_visa": _TestCard("visa", "4242", None),
    "pm_card_visa_debit": _TestCard("visa", "5556", None, "debit"),
    "pm_card_mastercard": _TestCard("mastercard", "4444", None),
    "pm_card_amex": _TestCard("amex", "8431", None),
    "pm_card_chargeDeclined": _TestCard("visa", "0002", "generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": _TestCard("visa", "9995", "insufficient_funds"),
    "pm_card_chargeDeclinedExpiredCard": _TestCard("visa", "0069", "expired_card"),
}


class PaymentMethodsMixin(ServerState):
    """``/v1/payment_methods`` and ``/v1/customers/{id}/payment_methods``."""

    def _attach(self, token_or_id: str, customer_id: str, *, param: str | None = None) -> JSON:
        """Attach a pm (existing, or created from a test token) and emit payment_method.attached."""
        if token_or_id in TEST_CARDS:
            card = TEST_CARDS[token_or_id]
            pm: JSON = {
                "id": self._new_id("pm"),
                "object": "payment_method",
                "allow_redisplay": "unspecified",
                "billing_details": {
                    "address": {
                        "city": None,
                        "country": None,
                        "line1": None,
                        "line2": None,
                        "postal_code": None,
                        "state": None,
                    },
                    "email": None,
                    "name": None,
                    "phone": None,
                },
                "card": {
                    "brand": card.brand,
                    "checks": {
                        "address_line1_check": None,
                        "address_postal_code_check": None,
                        "cvc_check": "pass",
                    },
                    "country": "US",
                    "display_brand": card.brand,
                    "exp_month": 12,
                    "exp_year": time.gmtime().tm_year + 3,
                    "fingerprint": hashlib.sha256(token_or_id.encode()).hexdigest()[:16],
                    "funding": card.funding,
                    "last4": card.last4,
                    "networks": {"available": [card.brand], "preferred": None},
                    "wallet": None,
                },
                "created": self._now(),
                "customer": None,
                "livemode": False,
                "metadata": {},
                "type": "card",
                "_decline_code": card.decline_code,  # internal, stripped when rendered
            }
            self._store(pm)
        else:
            pm = self._get(token_or_id, "payment_method", param=param)
            if pm["customer"] and pm["customer"] != customer_id:
                raise _state_error(
                    "The payment method you provided has already been attached to a customer.",
                    "payment_method_unexpected_state",
                )
        pm["customer"] = customer_id
        self._emit("payment_method.attached", pm)
        return pm

    @route("POST", "/v1/payment_methods/{id}/attach")
    def _h_pm_attach(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        _check_unknown(req.params, ("customer",))
        if "customer" not in req.params:
            raise _missing("customer")
        cus = self._get(_as_str(req.params["customer"], "customer"), "customer", param="customer")
        pm = self._attach(args[0], cus["id"])
        return 200, self._render(pm)

    @route("POST", "/v1/payment_methods/{id}/detach")
    def _h_pm_detach(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        pm = self._get(args[0], "payment_method")
        if not pm["customer"]:
            raise _state_error(
                "The payment method you provided is not attached to a customer.",
                "payment_method_unexpected_state",
            )
        cus = self._objects.get(pm["customer"])
        if cus is not None and cus["invoice_settings"]["default_payment_method"] == pm["id"]:
            cus["invoice_settings"]["default_payment_method"] = None
        pm["customer"] = None
        self._emit("payment_method.detached", pm)
        return 200, self._render(pm)

    @route("GET", "/v1/payment_methods/{id}")
    def _h_pm_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "payment_method"))

    def _pm_list(self, customer: str, p: JSON, url: str) -> JSON:
        ptype = p.get("type")

        def keep(o: JSON) -> bool:
            return o.get("customer") == customer and ptype in (None, "card")

        return self._page(self._of_type("payment_method"), keep, p, url)

    @route("GET", "/v1/customers/{id}/payment_methods")
    def _h_customer_pms(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        _check_unknown(
            req.params, ("type", "limit", "starting_after", "ending_before", "allow_redisplay")
        )
        cus = self._get(args[0], "customer")
        return 200, self._pm_list(
            cus["id"], req.params, f"/v1/customers/{cus['id']}/payment_methods"
        )

    @route("GET", "/v1/payment_methods")
    def _h_pm_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        _check_unknown(req.params, ("customer", "type", "limit", "starting_after", "ending_before"))
        if "customer" not in req.params:
            return 200, self._paginate([], req.params, "/v1/payment_methods")
        cus = self._get(_as_str(req.params["customer"], "customer"), "customer", param="customer")
        return 200, self._pm_list(cus["id"], req.params, "/v1/payment_methods")

    # ------------------------------------------------------------ snapshots and out-of-band helpers

    def payment_methods(self, customer: str | None = None) -> list[JSON]:
        return self._list_of(
            "payment_method", lambda o: customer is None or o["customer"] == customer
        )

    def attach_card(
        self, customer_id: str, card: str = "pm_card_visa", default: bool = True
    ) -> str:
        """Attach a test card to a customer (as Checkout would); returns the pm id."""
        with self._lock:
            cus = self._get(customer_id, "customer")
            pm = self._attach(card, cus["id"], param="payment_method")
            if default:
                prev = copy.deepcopy(cus["invoice_settings"])
                cus["invoice_settings"]["default_payment_method"] = pm["id"]
                self._emit("customer.updated", cus, {"invoice_settings": prev})
            return str(pm["id"])
