"""Customers: create, retrieve, update, delete, list and search (``/v1/customers``)."""

from __future__ import annotations

import copy
import secrets
import string

from .common import JSON, _invalid
from .params import _as_str, _check_unknown, _created_filter, _merge_metadata
from .routing import _Request, route
from .state import ServerState


class CustomersMixin(ServerState):
    """``/v1/customers``, and the out-of-band customer helpers and snapshots."""

    _CUSTOMER_FIELDS = (
        "name", "email", "description", "metadata", "phone", "address", "payment_method",
        "invoice_settings", "preferred_locales", "shipping", "tax_exempt", "invoice_prefix",
        "balance",
        "test_clock", "tax_id_data", "tax", "source", "next_invoice_sequence", "cash_balance",
    )  # fmt: skip

    def _new_customer(self, params: JSON) -> JSON:
        now = self._now()
        prefix = params.get("invoice_prefix") or "".join(
            secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8)
        )
        cus: JSON = {
            "id": self._new_id("cus")[:18],
            "object": "customer",
            "address": params.get("address") or None,
            "balance": 0,
            "created": now,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description"),
            "email": params.get("email"),
            "invoice_prefix": prefix,
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": _merge_metadata({}, params.get("metadata") or {}),
            "name": params.get("name"),
            "next_invoice_sequence": 1,
            "phone": params.get("phone"),
            "preferred_locales": params.get("preferred_locales") or [],
            "shipping": params.get("shipping") or None,
            "tax_exempt": params.get("tax_exempt") or "none",
            "test_clock": None,
        }
        self._store(cus)
        self._emit("customer.created", cus)
        return cus

    @route("POST", "/v1/customers")
    def _h_customer_create(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(p, self._CUSTOMER_FIELDS)
        for name in ("name", "email", "description", "phone"):
            if name in p:
                _as_str(p[name], name)
        cus = self._new_customer(p)
        if p.get("payment_method"):
            self._attach(
                _as_str(p["payment_method"], "payment_method"), cus["id"], param="payment_method"
            )
        if "invoice_settings" in p:
            self._update_customer(cus, {"invoice_settings": p["invoice_settings"]}, emit=False)
        return 200, self._render(cus)

    @route("GET", "/v1/customers/{id}")
    def _h_customer_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "customer", allow_deleted=True))

    def _update_customer(self, cus: JSON, p: JSON, emit: bool = True) -> None:
        previous: JSON = {}
        for name in (
            "name",
            "email",
            "description",
            "phone",
            "address",
            "shipping",
            "tax_exempt",
            "preferred_locales",
        ):
            if name in p:
                previous[name] = cus.get(name)
                cus[name] = p[name] if p[name] != "" else None
        if "metadata" in p:
            previous["metadata"] = cus["metadata"]
            cus["metadata"] = _merge_metadata(cus["metadata"], p["metadata"])
        if "invoice_settings" in p:
            settings = p["invoice_settings"]
            if not isinstance(settings, dict):
                raise _invalid("Invalid hash", "invoice_settings")
            _check_unknown(
                settings,
                ("default_payment_method", "custom_fields", "footer", "rendering_options"),
                "invoice_settings",
            )
            previous["invoice_settings"] = copy.deepcopy(cus["invoice_settings"])
            if "default_payment_method" in settings:
                pm_id = settings["default_payment_method"]
                if pm_id:
                    pm = self._get(
                        pm_id, "payment_method", param="invoice_settings[default_payment_method]"
                    )
                    if pm["customer"] != cus["id"]:
                        raise _invalid(
                            f"The customer does not have a payment method with the ID {pm_id}. "
                            "The payment method must be attached to the customer.",
                            "invoice_settings[default_payment_method]",
                            "resource_missing",
                        )
                cus["invoice_settings"]["default_payment_method"] = pm_id or None
            if "footer" in settings:
                cus["invoice_settings"]["footer"] = settings["footer"] or None
        if emit and previous:
            self._emit("customer.updated", cus, previous)

    @route("POST", "/v1/customers/{id}")
    def _h_customer_update(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        cus = self._get(args[0], "customer")
        _check_unknown(
            req.params, set(self._CUSTOMER_FIELDS) - {"payment_method"} | {"default_source"}
        )
        self._update_customer(cus, req.params)
        return 200, self._render(cus)

    def _delete_customer(self, cus: JSON) -> None:
        snapshot = self._render(cus)
        self._deleted.add(cus["id"])
        for pm in self._of_type("payment_method"):
            if pm.get("customer") == cus["id"]:
                pm["customer"] = None
        event = self._emit("customer.deleted", cus)
        event["data"]["object"] = snapshot

    @route("DELETE", "/v1/customers/{id}")
    def _h_customer_delete(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        cus = self._get(args[0], "customer")
        self._delete_customer(cus)
        return 200, {"id": cus["id"], "object": "customer", "deleted": True}

    @route("GET", "/v1/customers")
    def _h_customer_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p, ("email", "created", "limit", "starting_after", "ending_before", "test_clock")
        )
        created = _created_filter(p["created"], "created") if "created" in p else None

        def keep(o: JSON) -> bool:
            return (
                o["id"] not in self._deleted
                and ("email" not in p or o.get("email") == p["email"])
                and (created is None or created(o["created"]))
            )

        return 200, self._page(self._of_type("customer"), keep, p, "/v1/customers")

    @route("GET", "/v1/customers/search")
    def _h_customer_search(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        fields = {"email", "name", "phone", "created"}
        return 200, self._search("customer", req.params, fields, "/v1/customers/search")

    # ------------------------------------------------------------ snapshots and out-of-band helpers

    def customers(self) -> list[JSON]:
        """Snapshots of all customers that are not deleted, oldest first."""
        return self._list_of("customer")

    def customer(self, customer_id: str) -> JSON:
        with self._lock:
            return self._render(self._get(customer_id, "customer", allow_deleted=True))

    def create_customer_directly(
        self,
        email: str | None = None,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> JSON:
        with self._lock:
            cus = self._new_customer({"email": email, "name": name, "metadata": metadata or {}})
            return self._render(cus)

    def set_customer_deleted(self, customer_id: str) -> None:
        """Delete a customer as if from the Stripe dashboard (emits customer.deleted)."""
        with self._lock:
            cus = self._get(customer_id, "customer")
            self._delete_customer(cus)
