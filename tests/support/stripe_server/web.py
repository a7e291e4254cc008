"""The hosted pages behind the URLs the API hands out: invoice page and PDF, Checkout page."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qsl

from .common import DEFAULT_API_VERSION, JSON, StripeAPIError
from .currencies import money_text
from .payment_methods import TEST_CARDS
from .routing import _Request
from .state import ServerState
from .transport import _Response


class WebPagesMixin(ServerState):
    """Everything outside ``/v1/``: ``/``, ``/i/{invoice}[/pdf]``, ``/c/pay/{session}``."""

    def _handle_web(self, method: str, path: str, body: bytes) -> _Response:
        with self._lock:
            if path in ("/", ""):
                text = (
                    f"Local Stripe test server: {len(self.customers())} customers, "
                    f"{len(self.invoices())} invoices, {len(self._events)} events\n"
                )
                return _Response(200, text.encode(), content_type="text/plain; charset=utf-8")
            m = re.fullmatch(r"/i/([A-Za-z0-9_]+)", path)
            if m and method == "POST":
                return self._pay_on_hosted_page(m.group(1), body)
            m = re.fullmatch(r"/i/([A-Za-z0-9_]+)(/pdf)?", path)
            if m and method == "GET":
                inv = self._objects.get(m.group(1))
                if inv is None or inv.get("object") != "invoice":
                    return _Response(404, b"Not found", content_type="text/plain")
                rendered = self._render(inv)
                if m.group(2):
                    return _Response(
                        200,
                        _tiny_pdf(f"Invoice {rendered['number']} total {rendered['total']}"),
                        content_type="application/pdf",
                    )
                return _Response(
                    200,
                    _invoice_html(rendered, self._invoice_lines[inv["id"]]).encode(),
                    content_type="text/html; charset=utf-8",
                )
            m = re.fullmatch(r"/c/pay/([A-Za-z0-9_]+)", path)
            if m:
                cs = self._objects.get(m.group(1))
                if cs is None or cs.get("object") != "checkout.session":
                    return _Response(404, b"Not found", content_type="text/plain")
                if method == "POST":
                    form = dict(parse_qsl(body.decode("utf-8", "replace")))
                    card = form.get("card", "pm_card_visa")
                    if cs["status"] == "open" and card in TEST_CARDS:
                        self._complete_checkout(cs, card)
                    target = str(cs["success_url"] or "/").replace(
                        "{CHECKOUT_SESSION_ID}", cs["id"]
                    )
                    return _Response(
                        303, b"", headers={"Location": target}, content_type="text/plain"
                    )
                return _Response(
                    200, _checkout_html(cs).encode(), content_type="text/html; charset=utf-8"
                )
            return _Response(404, b"Not found", content_type="text/plain")

    def _pay_on_hosted_page(self, invoice_id: str, body: bytes) -> _Response:
        """The customer pays an open invoice with a test card (a send_invoice invoice's story)."""
        inv = self._objects.get(invoice_id)
        if inv is None or inv.get("object") != "invoice":
            return _Response(404, b"Not found", content_type="text/plain")
        card = dict(parse_qsl(body.decode("utf-8", "replace"))).get("card", "pm_card_visa")
        if inv["status"] == "open" and card in TEST_CARDS:
            pm = self._attach(card, inv["customer"])
            req = _Request(
                "POST",
                f"/v1/invoices/{invoice_id}/pay",
                {"payment_method": pm["id"]},
                "",
                None,
                DEFAULT_API_VERSION,
                self._new_id("req"),
            )
            try:
                self._h_invoice_pay(req, [invoice_id])  # type: ignore[attr-defined]
            except StripeAPIError:
                pass  # a declined test card: the page shows the invoice still open
        return _Response(
            303, b"", headers={"Location": f"/i/{invoice_id}"}, content_type="text/plain"
        )


def _tiny_pdf(text: str) -> bytes:
    safe = text.replace("\\", "").replace("(", "").replace(")", "")
    stream = f"BT /F1 18 Tf 72 720 Td ({safe}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def _invoice_html(inv: JSON, lines: list[JSON]) -> str:
    number = html.escape(str(inv["number"]))
    currency = str(inv["currency"])
    rows = "".join(
        f"<tr><td>{html.escape(str(line['description']))}</td><td>{line['quantity_decimal']}</td>"
        f"<td>{html.escape(money_text(int(line['amount']), currency))}</td></tr>"
        for line in lines
    )
    return (
        f"<!doctype html><html><head><title>Invoice {number}</title></head><body>"
        f"<h1>Invoice {number}</h1><p>Status: <b id='status'>{inv['status']}</b></p>"
        f"<table><tr><th>Description</th><th>Qty</th><th>Amount</th></tr>{rows}</table>"
        f"<p>Total: <b id='total'>{html.escape(money_text(int(inv['total']), currency))}</b></p>"
        f"{_pay_form(inv) if inv['status'] == 'open' else ''}"
        "</body></html>"
    )


def _pay_form(inv: JSON) -> str:
    options = "".join(
        f"<label><input type='radio' name='card' value='{token}'"
        f"{' checked' if token == 'pm_card_visa' else ''}>"
        f" {card.brand} •••• {card.last4}{' (declines)' if card.decline_code else ''}</label><br>"
        for token, card in TEST_CARDS.items()
    )
    return (
        f"<form method='post' action='/i/{html.escape(str(inv['id']))}'>{options}"
        "<button type='submit' id='pay'>Pay with this test card</button></form>"
    )


def _checkout_html(cs: JSON) -> str:
    if cs["status"] != "open":
        return f"<!doctype html><html><body><p>This session is {cs['status']}.</p></body></html>"
    options = "".join(
        f"<label><input type='radio' name='card' value='{token}'"
        f"{' checked' if token == 'pm_card_visa' else ''}>"
        f" {card.brand} •••• {card.last4}{' (declines)' if card.decline_code else ''}</label><br>"
        for token, card in TEST_CARDS.items()
    )
    cancel = html.escape(str(cs.get("cancel_url") or "/"))
    return (
        "<!doctype html><html><head><title>Save card (local Stripe test server)</title>"
        "</head><body>"
        f"<h1>Save a card</h1><form method='post' action='/c/pay/{cs['id']}'>{options}"
        "<button type='submit' id='submit'>Save card</button></form>"
        f"<p><a id='cancel' href='{cancel}'>Cancel</a></p></body></html>"
    )
