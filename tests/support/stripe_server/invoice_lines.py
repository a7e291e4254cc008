"""Invoice lines: list them, add them to a draft (all or nothing), recompute the totals."""

from __future__ import annotations

import copy
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from . import currencies
from .common import JSON, StripeAPIError, _invalid, _missing, _rand, _state_error
from .params import _as_decimal, _as_int, _as_list, _as_str, _check_unknown, _merge_metadata
from .routing import _Request, route
from .state import ServerState

MAX_LINES_PER_INVOICE = 250


class InvoiceLinesMixin(ServerState):
    """``/v1/invoices/{id}/lines`` and ``/v1/invoices/{id}/add_lines``."""

    def _recompute(self, inv: JSON) -> None:
        subtotal = sum(int(line["amount"]) for line in self._invoice_lines[inv["id"]])
        inv["subtotal"] = inv["subtotal_excluding_tax"] = subtotal
        inv["total"] = inv["total_excluding_tax"] = subtotal
        inv["amount_due"] = max(0, subtotal + int(inv["starting_balance"]))
        inv["amount_remaining"] = max(0, inv["amount_due"] - int(inv["amount_paid"]))

    @route("GET", "/v1/invoices/{id}/lines")
    def _h_invoice_lines(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        p = req.params
        _check_unknown(p, ("limit", "starting_after", "ending_before"))
        limit = _as_int(p.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise _invalid("Invalid limit: must be between 1 and 100", "limit")
        lines = self._invoice_lines[inv["id"]]  # oldest first, like Stripe
        ids = [line["id"] for line in lines]
        if "starting_after" in p:
            if p["starting_after"] not in ids:
                raise _invalid(
                    f"No such line item: '{p['starting_after']}'",
                    "starting_after",
                    "resource_missing",
                )
            rest = lines[ids.index(p["starting_after"]) + 1 :]
            page, has_more = rest[:limit], len(rest) > limit
        elif "ending_before" in p:
            if p["ending_before"] not in ids:
                raise _invalid(
                    f"No such line item: '{p['ending_before']}'",
                    "ending_before",
                    "resource_missing",
                )
            rest = lines[: ids.index(p["ending_before"])]
            page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = lines[:limit], len(lines) > limit
        return 200, {
            "object": "list",
            "data": copy.deepcopy(page),
            "has_more": has_more,
            "url": f"/v1/invoices/{inv['id']}/lines",
        }

    _LINE_FIELDS = (
        "amount", "description", "quantity", "quantity_decimal", "price_data", "pricing",
        "metadata", "period",
        "discountable", "discounts", "tax_rates", "tax_amounts", "invoice_item",
    )  # fmt: skip

    def invoice_line_count(self, invoice_id: str) -> int:
        """How many lines an invoice holds (a test helper: Stripe's API sends no such count)."""
        with self._lock:
            return len(self._invoice_lines[invoice_id])

    def _add_line(self, inv: JSON, line: Any, param: str) -> JSON:
        if not isinstance(line, dict):
            raise _invalid("Invalid line", param)
        _check_unknown(line, self._LINE_FIELDS, param)
        for unsupported in ("pricing", "invoice_item", "tax_amounts", "discounts"):
            if line.get(unsupported):
                raise _invalid(
                    f"{param}[{unsupported}] is not supported by the local Stripe test server",
                    f"{param}[{unsupported}]",
                )
        if "quantity" in line and "quantity_decimal" in line:
            raise _invalid(
                "You may only specify one of quantity and quantity_decimal.", f"{param}[quantity]"
            )
        qty = (
            _as_decimal(line["quantity_decimal"], f"{param}[quantity_decimal]")
            if "quantity_decimal" in line
            else Decimal(_as_int(line.get("quantity", 1), f"{param}[quantity]"))
        )
        if qty < 0:
            raise _invalid("Quantity must be non-negative", f"{param}[quantity]")
        now = self._now()
        description = line.get("description")
        product = f"prod_{_rand(14)}"
        if "amount" in line:
            if "price_data" in line:
                raise _invalid(
                    "You may only specify one of amount and price_data.", f"{param}[amount]"
                )
            amount = _as_int(line["amount"], f"{param}[amount]")
            if qty != 1:
                raise _invalid(
                    "`quantity` must be 1 when `amount` is set; use price_data instead.",
                    f"{param}[quantity]",
                )
            unit = Decimal(amount)
        elif "price_data" in line:
            pd = line["price_data"]
            pparam = f"{param}[price_data]"
            if not isinstance(pd, dict):
                raise _invalid("Invalid hash", pparam)
            _check_unknown(
                pd,
                (
                    "currency",
                    "product",
                    "product_data",
                    "tax_behavior",
                    "unit_amount",
                    "unit_amount_decimal",
                ),
                pparam,
            )
            if "currency" not in pd:
                raise _missing(f"{pparam}[currency]")
            if str(pd["currency"]).lower() != inv["currency"]:
                raise _invalid(
                    f"The price_data currency ({pd['currency']}) must match the invoice currency "
                    f"({inv['currency']}).",
                    f"{pparam}[currency]",
                )
            if "product_data" in pd:
                prod = pd["product_data"]
                if not isinstance(prod, dict) or not prod.get("name"):
                    raise _missing(f"{pparam}[product_data][name]")
                description = description or prod["name"]
            elif "product" in pd:
                product = _as_str(pd["product"], f"{pparam}[product]")
            else:
                raise _invalid(
                    "One of product or product_data is required.", f"{pparam}[product_data]"
                )
            if ("unit_amount" in pd) == ("unit_amount_decimal" in pd):
                raise _invalid(
                    "Exactly one of unit_amount and unit_amount_decimal is required.",
                    f"{pparam}[unit_amount]",
                )
            unit = (
                Decimal(_as_int(pd["unit_amount"], f"{pparam}[unit_amount]"))
                if "unit_amount" in pd
                else _as_decimal(pd["unit_amount_decimal"], f"{pparam}[unit_amount_decimal]")
            )
            if unit < 0:
                raise _invalid("unit_amount must be non-negative", f"{pparam}[unit_amount]")
            amount = int((unit * qty).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        else:
            raise _invalid(
                "You must specify either amount or price_data for each line.", f"{param}[amount]"
            )
        problem = currencies.amount_problem(amount, inv["currency"])
        if problem is not None:
            raise _invalid(problem, f"{param}[amount]", "invalid_amount")
        period = line.get("period")
        if period is not None:
            if not isinstance(period, dict) or "start" not in period or "end" not in period:
                raise _invalid("period needs start and end", f"{param}[period]")
            period = {
                "end": _as_int(period["end"], f"{param}[period][end]"),
                "start": _as_int(period["start"], f"{param}[period][start]"),
            }
            if period["end"] < period["start"]:
                raise _invalid(
                    "The period end must be greater than or equal to the start.", f"{param}[period]"
                )
        quantity_int = int(qty) if qty == qty.to_integral_value() else None
        item: JSON = {
            "id": self._new_id("il"),
            "object": "line_item",
            "amount": amount,
            "currency": inv["currency"],
            "description": description,
            "discount_amounts": [],
            "discountable": amount >= 0,
            "discounts": [],
            "invoice": inv["id"],
            "livemode": False,
            "metadata": _merge_metadata({}, line.get("metadata") or {}, f"{param}[metadata]"),
            "parent": {
                "type": "invoice_item_details",
                "invoice_item_details": {
                    "invoice_item": self._new_id("ii"),
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": None,
                },
                "subscription_item_details": None,
            },
            "period": period or {"end": now, "start": now},
            "pretax_credit_amounts": [],
            "pricing": {
                "type": "price_details",
                "price_details": {"price": f"price_{_rand(14)}", "product": product},
                "unit_amount_decimal": str(unit),
            },
            "quantity": quantity_int,
            "quantity_decimal": str(qty),
            "subscription": None,
            "subtotal": amount,
            "taxes": [],
        }
        self._invoice_lines[inv["id"]].append(item)
        return item

    @route("POST", "/v1/invoices/{id}/add_lines")
    def _h_invoice_add_lines(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        p = req.params
        _check_unknown(p, ("lines", "invoice_metadata"))
        if "lines" not in p:
            raise _missing("lines")
        lines = _as_list(p["lines"], "lines")
        if not lines:
            raise _invalid("lines must not be empty", "lines")
        if inv["status"] != "draft":
            raise _state_error(
                f"You can only add lines to a draft invoice; this invoice is {inv['status']}.",
                "invoice_not_editable",
            )
        if len(self._invoice_lines[inv["id"]]) + len(lines) > MAX_LINES_PER_INVOICE:
            raise _invalid(f"An invoice can have at most {MAX_LINES_PER_INVOICE} lines.", "lines")
        previous: JSON = {
            "subtotal": inv["subtotal"],
            "total": inv["total"],
            "amount_due": inv["amount_due"],
        }
        before = list(self._invoice_lines[inv["id"]])
        try:
            for i, line in enumerate(lines):
                self._add_line(inv, line, f"lines[{i}]")
            if "invoice_metadata" in p:
                previous["metadata"] = inv["metadata"]
                inv["metadata"] = _merge_metadata(
                    inv["metadata"], p["invoice_metadata"], "invoice_metadata"
                )
        except StripeAPIError:
            self._invoice_lines[inv["id"]] = before  # all or nothing
            raise
        self._recompute(inv)
        self._emit("invoice.updated", inv, previous)
        return 200, self._render(inv)
