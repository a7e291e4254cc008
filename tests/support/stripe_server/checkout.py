"""Checkout sessions in setup mode and their setup intents (``/v1/checkout/sessions``)."""

from __future__ import annotations

from .common import JSON, _invalid, _missing, _rand
from .params import _as_str, _check_unknown, _merge_metadata
from .payment_methods import TEST_CARDS
from .routing import _Request, route
from .state import ServerState


class CheckoutMixin(ServerState):
    """Opening a setup-mode session, and completing it as the customer would."""

    @route("POST", "/v1/checkout/sessions")
    def _h_checkout_create(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p,
            (
                "mode",
                "customer",
                "success_url",
                "cancel_url",
                "currency",
                "payment_method_types",
                "metadata",
                "setup_intent_data",
                "client_reference_id",
                "customer_email",
                "ui_mode",
                "return_url",
                "locale",
                "expires_at",
            ),
        )
        if "mode" not in p:
            raise _missing("mode")
        if p["mode"] != "setup":
            raise _invalid("The local Stripe test server only supports mode=setup.", "mode")
        if p.get("ui_mode", "hosted") == "hosted" and "success_url" not in p:
            raise _missing("success_url")
        cus = None
        if p.get("customer"):
            cus = self._get(_as_str(p["customer"], "customer"), "customer", param="customer")
        now = self._now()
        seti: JSON = {
            "id": self._new_id("seti"),
            "object": "setup_intent",
            "cancellation_reason": None,
            "client_secret": f"seti_secret_{_rand(24)}",
            "created": now,
            "customer": cus["id"] if cus else None,
            "description": None,
            "last_setup_error": None,
            "livemode": False,
            "metadata": {},
            "payment_method": None,
            "payment_method_types": ["card"],
            "status": "requires_payment_method",
            "usage": "off_session",
        }
        self._store(seti)
        session_id = f"cs_test_{_rand(58)}"
        base = self.url if self._httpd is not None else "http://127.0.0.1"
        cs: JSON = {
            "id": session_id,
            "object": "checkout.session",
            "cancel_url": p.get("cancel_url"),
            "client_reference_id": p.get("client_reference_id"),
            "created": now,
            "currency": p.get("currency"),
            "customer": cus["id"] if cus else None,
            "customer_email": p.get("customer_email"),
            "expires_at": now + 86400,
            "livemode": False,
            "metadata": _merge_metadata({}, p.get("metadata") or {}),
            "mode": "setup",
            "payment_method_types": p.get("payment_method_types") or ["card"],
            "payment_status": "no_payment_required",
            "setup_intent": seti["id"],
            "status": "open",
            "success_url": p.get("success_url"),
            "ui_mode": p.get("ui_mode", "hosted"),
            "url": f"{base}/c/pay/{session_id}",
        }
        self._store(cs)
        return 200, self._render(cs)

    @route("GET", "/v1/checkout/sessions/{id}")
    def _h_checkout_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "checkout.session"))

    @route("GET", "/v1/setup_intents/{id}")
    def _h_setup_intent_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "setup_intent"))

    def _complete_checkout(self, cs: JSON, card: str) -> str:
        if cs["status"] != "open":
            raise ValueError(f"checkout session is {cs['status']}")
        if card not in TEST_CARDS:
            raise ValueError(f"unknown test card {card}")
        if cs["customer"] is None:
            cus = self._new_customer({"email": cs.get("customer_email")})
            cs["customer"] = cus["id"]
        pm = self._attach(card, cs["customer"])
        seti = self._objects[cs["setup_intent"]]
        seti["customer"] = cs["customer"]
        seti["payment_method"] = pm["id"]
        seti["status"] = "succeeded"
        self._emit("setup_intent.succeeded", seti)
        cs["status"] = "complete"
        self._emit("checkout.session.completed", cs)
        return str(pm["id"])

    # ------------------------------------------------------------ snapshots and out-of-band helpers

    def checkout_sessions(self) -> list[JSON]:
        return self._list_of("checkout.session")

    def complete_checkout_session(self, session_id: str, card: str = "pm_card_visa") -> str:
        """Finish a setup-mode Checkout session as the customer would; returns the pm id.

        Like Stripe, this does NOT set the customer's default payment method: do that
        when handling ``checkout.session.completed`` / ``setup_intent.succeeded``.
        """
        with self._lock:
            return self._complete_checkout(self._get(session_id, "checkout.session"), card)
