"""Check a Stripe JSON object against the typed classes stripe-python generates from Stripe's
OpenAPI specification (`stripe/_invoice.py` and friends, for the pinned API version).

stripe-python's classes list every field the specification gives an object, with its type:
`Invoice.lines: ListObject["InvoiceLineItem"]`, `Invoice.customer:
Optional[ExpandableField["Customer"]]`, nested objects as inner classes. `problems(obj)` walks
a JSON object (as the local Stripe test server answers it) and names every field the
specification does not have, and every value of the wrong type or outside its enum, as a path
such as `invoice.lines.total_count`. Fields the specification has but the object leaves out are
not reported (the server produces a subset).
"""

from __future__ import annotations

import sys
import types
import typing
from decimal import Decimal
from importlib import import_module
from typing import Any, ForwardRef, Literal, Union

import stripe
from stripe import StripeObject
from stripe._list_object import ListObject
from stripe._object_classes import OBJECT_CLASSES
from stripe._stripe_object import UntypedStripeObject


def class_for(object_name: str) -> type[StripeObject] | None:
    """The class that types Stripe's `object` value ('invoice' -> stripe.Invoice)."""
    if object_name in ("list", "search_result") or object_name not in OBJECT_CLASSES:
        return None
    module, name = OBJECT_CLASSES[object_name]
    cls: type[StripeObject] = getattr(import_module(module), name)
    return cls


class _Names(dict[str, Any]):
    """Names seen from a class body: its own and its outer classes', then stripe's (lazy)."""

    def __missing__(self, key: str) -> Any:
        return getattr(stripe, key)


def _hints(cls: type) -> dict[str, Any]:
    """The annotated fields of a stripe-python class, forward references resolved."""
    module = sys.modules[cls.__module__]
    localns = _Names(vars(module))
    # Inner classes refer to their siblings and outer classes by bare name.
    outer: Any = module
    for part in cls.__qualname__.split("."):
        outer = getattr(outer, part)
        localns.update(vars(outer))
    globalns = dict(vars(module))
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, StripeObject, dict) or not klass.__module__.startswith("stripe"):
            continue
        for name, ann in vars(klass).get("__annotations__", {}).items():
            if name.startswith("_") or name.isupper():
                continue
            hints[name] = _resolve(ann, globalns, localns)
    return hints


def _resolve(ann: Any, globalns: dict[str, Any], localns: dict[str, Any]) -> Any:
    if isinstance(ann, str):
        ann = ForwardRef(ann)
    if isinstance(ann, ForwardRef):
        return typing._eval_type(ann, globalns, localns)  # type: ignore[attr-defined]
    return ann


def problems(obj: Any, cls: type[StripeObject] | None = None, path: str = "") -> list[str]:
    """Every field of `obj` the specification does not have, and every value of wrong type."""
    if cls is None:
        name = obj.get("object") if isinstance(obj, dict) else None
        if name == "list":
            return _check_list(obj, Any, path or "list")
        found = class_for(str(name))
        if found is None:
            return [f"{path or '<root>'}: unknown object type {name!r}"]
        cls = found
        path = path or str(name)
    return _check_object(obj, cls, path)


def _check_object(obj: Any, cls: type, path: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{path}: expected an object ({cls.__name__}), got {obj!r}"]
    if obj.get("deleted") is True and hasattr(stripe, f"Deleted{cls.__name__}"):
        cls = getattr(stripe, f"Deleted{cls.__name__}")
    hints = _hints(cls)
    out: list[str] = []
    for key, value in obj.items():
        if key not in hints:
            out.append(f"{path}.{key}: not a field of {cls.__name__} in Stripe's specification")
            continue
        out += _check(value, hints[key], f"{path}.{key}")
    return out


# Names stripe-python's classes import under another name (credit notes' refunds).
_ALIASES: dict[str, Any] = {"RefundResource": stripe.Refund}


def _check(value: Any, tp: Any, path: str) -> list[str]:
    if isinstance(tp, ForwardRef):  # left unresolved inside a generic: a stripe class
        tp = _ALIASES.get(tp.__forward_arg__) or getattr(stripe, tp.__forward_arg__)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return []
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        options = [a for a in args if a is not type(None)]
        if any(typing.get_origin(a) is Literal for a in options):
            # stripe-python widens every enum with `str` for values added later; the server
            # must answer one of the values the specification lists.
            options = [a for a in options if a is not str]
        results = [_check(value, a, path) for a in options]
        return [] if any(not r for r in results) else min(results, key=len)
    if origin is Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {list(args)}"]
    if tp is type(None):
        return [] if value is None else [f"{path}: expected null, got {value!r}"]
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        return [p for i, item in enumerate(value) for p in _check(item, args[0], f"{path}[{i}]")]
    if origin in (dict, typing.Dict):  # noqa: UP006
        return [] if isinstance(value, dict) else [f"{path}: expected a hash, got {value!r}"]
    if tp is str or tp is Decimal:  # Stripe sends decimals as strings ("12.5")
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r}"]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r}"]
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected an integer, got {value!r}"]
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number, got {value!r}"]
    base = origin or tp
    if isinstance(base, type) and issubclass(base, UntypedStripeObject):
        return [] if isinstance(value, dict) else [f"{path}: expected a hash, got {value!r}"]
    if isinstance(base, type) and issubclass(base, ListObject):
        return _check_list(value, args[0] if args else Any, path)
    if isinstance(base, type) and issubclass(base, StripeObject):
        return _check_object(value, base, path)
    return [f"{path}: no rule for type {tp!r}"]


def _check_list(value: Any, item: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected a list object, got {value!r}"]
    out: list[str] = []
    for key in value:
        if key not in ("object", "data", "has_more", "url"):
            out.append(f"{path}.{key}: not a field of a list object in Stripe's specification")
    if value.get("object") != "list":
        out.append(f"{path}.object: expected 'list', got {value.get('object')!r}")
    out += _check(value.get("data"), list[item], f"{path}.data")  # type: ignore[valid-type]
    return out
