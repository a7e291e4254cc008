"""Request parsing: Stripe's form encoding, parameter checks, and search query syntax."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from .common import JSON, _invalid

# --------------------------------------------------------------------------- form encoding


def parse_form(pairs: Iterable[tuple[str, str]]) -> JSON:
    """Turn ``a[b][0][c]=v`` pairs into nested dicts and lists (``x[]`` appends)."""
    root: JSON = {}
    for key, value in pairs:
        m = re.match(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$", key)
        if not m:
            raise _invalid(f"Invalid parameter name: {key}", key)
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # a[]=x
                part = str(len(node))
            if last:
                node[part] = value
            else:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = {}
                    node[part] = nxt
                node = nxt
    result: JSON = _listify(root)
    return result


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        conv = {k: _listify(v) for k, v in node.items()}
        if conv and all(k.isdigit() for k in conv):
            return [conv[k] for k in sorted(conv, key=int)]
        return conv
    return node


def _as_int(value: Any, param: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(str(value))
    except (TypeError, ValueError):
        raise _invalid(f"Invalid integer: {value}", param) from None


def _as_decimal(value: Any, param: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise _invalid(f"Invalid decimal: {value}", param) from None
    if not d.is_finite():
        raise _invalid(f"Invalid decimal: {value}", param)
    return d


def _as_bool(value: Any, param: str) -> bool:
    if value in ("true", True):
        return True
    if value in ("false", False):
        return False
    raise _invalid(f"Invalid boolean: {value}", param)


def _as_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"Invalid string: {value!r}", param)
    return value


def _as_list(value: Any, param: str) -> list[Any]:
    if isinstance(value, list):
        return value
    if value == "":
        return []
    raise _invalid(f"Invalid array: {param}", param)


def _check_unknown(params: JSON, allowed: Iterable[str], prefix: str = "") -> None:
    allowed_set = set(allowed) | {"expand"}
    for key in params:
        if key not in allowed_set:
            name = f"{prefix}[{key}]" if prefix else key
            raise _invalid(f"Received unknown parameter: {name}", name)


def _merge_metadata(current: JSON, value: Any, param: str = "metadata") -> JSON:
    """Stripe's metadata update: keys merge, '' unsets a key, metadata='' clears all."""
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise _invalid("Invalid hash", param)
    out = dict(current)
    for k, v in value.items():
        if not isinstance(v, str):
            raise _invalid("Invalid metadata value", f"{param}[{k}]")
        if v == "":
            out.pop(k, None)
        else:
            if len(k) > 40 or len(v) > 500:
                raise _invalid(
                    "Metadata keys are limited to 40 and values to 500 characters", param
                )
            out[k] = v
    if len(out) > 50:
        raise _invalid("Metadata is limited to 50 keys", param)
    return out


def _created_filter(value: Any, param: str) -> Callable[[int], bool]:
    if isinstance(value, dict):
        _check_unknown(value, ("gt", "gte", "lt", "lte"), param)
        bounds = {k: _as_int(v, f"{param}[{k}]") for k, v in value.items()}

        def check(ts: int) -> bool:
            return (
                ("gt" not in bounds or ts > bounds["gt"])
                and ("gte" not in bounds or ts >= bounds["gte"])
                and ("lt" not in bounds or ts < bounds["lt"])
                and ("lte" not in bounds or ts <= bounds["lte"])
            )

        return check
    exact = _as_int(value, param)
    return lambda ts: ts == exact


# --------------------------------------------------------------------------- search queries

_CLAUSE = re.compile(
    r"""^(?P<neg>-)?\s*(?P<field>metadata\[(?P<q>['"])(?P<mkey>.+?)(?P=q)\]|[a-z_]+)\s*
        (?P<op>:|~|>=|<=|>|<)\s*
        (?:'(?P<sq>(?:[^'\\]|\\.)*)'|"(?P<dq>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s'"]+))$""",
    re.X,
)


def _parse_query(query: str, fields: set[str]) -> Callable[[JSON], bool]:
    query = query.strip()
    if not query:
        raise _invalid("Missing required param: query.", "query", "parameter_missing")
    has_and = re.search(r"\s+AND\s+", query) is not None
    has_or = re.search(r"\s+OR\s+", query) is not None
    if has_and and has_or:
        raise _invalid("Search queries cannot mix AND and OR", "query")
    clauses = re.split(r"\s+(?:AND|OR)\s+", query)
    tests: list[Callable[[JSON], bool]] = []
    for clause in clauses:
        m = _CLAUSE.match(clause.strip())
        if not m:
            raise _invalid(f"Invalid search query: {clause!r}", "query")
        raw = m.group("sq") if m.group("sq") is not None else m.group("dq")
        if raw is None:
            raw = m.group("bare")
        value = re.sub(r"\\(.)", r"\1", raw)
        mkey = m.group("mkey")
        fname = m.group("field")
        if mkey is None and fname not in fields:
            raise _invalid(f"Field '{fname}' is not supported in search queries", "query")
        tests.append(_make_clause(mkey, fname, m.group("op"), value, bool(m.group("neg"))))
    if has_or:
        return lambda obj: any(t(obj) for t in tests)
    return lambda obj: all(t(obj) for t in tests)


def _make_clause(
    mkey: str | None, fname: str, op: str, value: str, neg: bool
) -> Callable[[JSON], bool]:
    def get(obj: JSON) -> Any:
        if mkey is not None:
            return (obj.get("metadata") or {}).get(mkey)
        return obj.get(fname)

    def test(obj: JSON) -> bool:
        actual = get(obj)
        if actual is None:
            result = False
        elif op == ":":
            result = str(actual).lower() == value.lower() if mkey is None else str(actual) == value
        elif op == "~":
            result = value.lower() in str(actual).lower()
        else:
            try:
                a, b = Decimal(str(actual)), Decimal(value)
            except InvalidOperation:
                return False
            result = {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]
        return not result if neg else result

    return test
