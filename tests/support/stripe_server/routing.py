"""Routing: the parsed request, and the ``@route`` registry of handler methods.

Each resource module marks its handlers with ``@route(method, pattern)``; ``{id}`` in a
pattern stands for an object id. ``collect_routes`` gathers them from the server's classes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .common import JSON

OBJECT_ID = r"([A-Za-z0-9_]+)"
_MARK = "_stripe_routes"


@dataclass
class _Request:
    method: str
    path: str
    params: JSON
    api_key: str
    idempotency_key: str | None
    version: str
    request_id: str


Handler = Callable[[_Request, list[str]], tuple[int, JSON]]
Route = tuple[str, re.Pattern[str], Handler]
_F = TypeVar("_F", bound=Callable[..., Any])


def route(method: str, pattern: str) -> Callable[[_F], _F]:
    """Serve ``method`` requests whose path fully matches ``pattern`` with this method."""

    def mark(fn: _F) -> _F:
        setattr(fn, _MARK, (*getattr(fn, _MARK, ()), (method, pattern)))
        return fn

    return mark


def collect_routes(server: object) -> list[Route]:
    """Every ``@route`` of ``server``'s classes, bound to it.

    Literal paths come before paths with an ``{id}`` (``/v1/customers/search`` is not the
    customer "search"); otherwise in class order (the MRO), then definition order.
    """
    found: list[tuple[bool, str, str, str]] = []
    seen: set[str] = set()
    for cls in type(server).__mro__:
        for name, attr in vars(cls).items():
            if name in seen or not getattr(attr, _MARK, None):
                continue
            seen.add(name)
            for method, pattern in getattr(attr, _MARK):
                found.append(("{id}" in pattern, method, pattern, name))
    found.sort(key=lambda r: r[0])  # stable
    return [
        (method, re.compile(pattern.replace("{id}", OBJECT_ID)), getattr(server, name))
        for _, method, pattern, name in found
    ]
