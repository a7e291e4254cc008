"""Links that keep their place: a page's filters and open detail live in the URL's query
parameters, so a reload, the browser's back button or a pasted link shows the same view.

A page lists its `Binding`s (widget key <-> query parameter) and calls `restore(...)` before it
draws the widgets and `publish(...)` after. `restore` fills each widget's session state from
the URL on a new session, or when the URL changed under the page (back button, pasted link);
otherwise the widgets keep what the person chose. Widgets bound here take their default from
the binding, never from `value=`/`default=` (Streamlit warns when both are set). `publish`
writes the chosen values back, leaving out defaults so a plain page keeps a plain URL.

A value in the URL that is no longer valid (a removed customer, a mistyped status) is dropped,
never an error: the link still opens the page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import streamlit as st

# url text -> widget value (None: not valid, the default applies)
Decode = Callable[[str], Any]
# widget value -> url text ('' : nothing to say)
Encode = Callable[[Any], str]


@dataclass(frozen=True)
class Binding:
    key: str  # the widget's key in st.session_state
    name: str  # the query parameter
    default: Any
    decode: Decode
    encode: Encode


def _written_key(page: str) -> str:
    return f"_url_written_{page}"


def _url(names: Iterable[str]) -> dict[str, str]:
    return {n: st.query_params[n] for n in names if n in st.query_params}


def restore(page: str, bindings: Sequence[Binding]) -> None:
    """Before the widgets: seed their state from the URL (new session, or the URL moved)."""
    names = [b.name for b in bindings]
    written: dict[str, str] | None = st.session_state.get(_written_key(page))
    moved = written is not None and _url(names) != {n: v for n, v in written.items() if v}
    for b in bindings:
        if b.key in st.session_state and not moved:
            continue
        text = st.query_params.get(b.name)
        value = b.decode(text) if text else None
        st.session_state[b.key] = b.default if value is None else value


def publish(page: str, bindings: Sequence[Binding], extra: dict[str, str] | None = None) -> None:
    """After the widgets: write each non-default value (and `extra` names: '' removes one)."""
    wanted: dict[str, str] = {}
    for b in bindings:
        value = st.session_state.get(b.key, b.default)
        text = b.encode(value)
        wanted[b.name] = "" if text == b.encode(b.default) else text
    wanted.update(extra or {})
    for name, text in wanted.items():
        if text and st.query_params.get(name) != text:
            st.query_params[name] = text
        elif not text and name in st.query_params:
            del st.query_params[name]
    st.session_state[_written_key(page)] = wanted


# ------------------------------------------------------------------------------ codecs


def text(key: str, name: str) -> Binding:
    """A text input: the text as typed."""
    return Binding(key, name, "", lambda t: t, lambda v: str(v or "").strip())


def flag(key: str, name: str) -> Binding:
    """A checkbox or toggle: '1' when on."""
    return Binding(
        key, name, False, lambda t: t in ("1", "true", "yes"), lambda v: "1" if v else ""
    )


def choices(
    key: str,
    name: str,
    options: Sequence[Any],
    cast: Callable[[str], Any] = str,
    default: Sequence[Any] = (),
) -> Binding:
    """A multiselect: comma-separated values, each one of `options` (others dropped); an
    empty selection that differs from `default` is written as '-'."""

    def decode(t: str) -> list[Any]:
        out: list[Any] = []
        if t == "-":
            return out
        for part in t.split(","):
            try:
                value = cast(part.strip())
            except ValueError:
                continue
            if value in options and value not in out:
                out.append(value)
        return out

    def encode(v: Any) -> str:
        return ",".join(str(x) for x in v or []) or ("-" if default else "")

    return Binding(key, name, list(default), decode, encode)


def one(key: str, name: str, options: Sequence[Any], default: Any = None) -> Binding:
    """A selectbox or radio: one of `options` (others: the default)."""

    def decode(t: str) -> Any:
        for option in options:
            if str(option) == t:
                return option
        return None

    return Binding(key, name, default, decode, lambda v: "" if v is None else str(v))


def ordered_range(key: str, name: str, options: Sequence[str], default: tuple[str, str]) -> Binding:
    """A range select_slider over ordered `options`: 'from..to' (one value: both ends)."""

    def decode(t: str) -> tuple[str, str] | None:
        start, _, end = t.partition("..")
        end = end or start
        if start in options and end in options and options.index(start) <= options.index(end):
            return (start, end)
        return None

    return Binding(key, name, default, decode, lambda v: "..".join(v) if v else "")


def date_range(key: str, name: str) -> Binding:
    """A date_input over a range: 'YYYY-MM-DD..YYYY-MM-DD' (either end may be missing)."""

    def decode(t: str) -> tuple[date, ...] | None:
        start, _, end = t.partition("..")
        try:
            days = tuple(date.fromisoformat(p) for p in (start, end) if p)
        except ValueError:
            return None
        return days if len(days) < 2 or days[0] <= days[1] else None

    def encode(v: Any) -> str:
        days = [d.isoformat() for d in (v or ()) if d]
        return "..".join(days) if len(days) == 2 else (f"{days[0]}.." if days else "")

    return Binding(key, name, (), decode, encode)


def range_ends(value: Any) -> tuple[date | None, date | None]:
    """The (from, to) of a date_input range: either may be None while a range is half picked."""
    days = list(value or ())
    return (days[0] if days else None, days[1] if len(days) > 1 else None)
