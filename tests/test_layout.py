"""The shape of billing_core (DESIGN.md section 2): which wing may import which library.

Read from the source as text (every import statement, at any depth), so a rule broken inside a
function is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "billing_core"
MAX_LINES = 600


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def _imported(path: Path) -> set[str]:
    """Top-level names of every module the file imports (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_modules_exist() -> None:
    assert len(_modules()) > 40


@pytest.mark.parametrize(
    ("library", "allowed"),
    [
        ("streamlit", ()),
        ("stripe", ("billing_core/stripe/",)),
        ("boto3", ("billing_core/costs/cost_explorer.py", "billing_core/usage/alerts.py")),
        ("pandas", ("billing_core/views/",)),
        ("plotly", ("billing_core/views/",)),
    ],
)
def test_library_is_imported_only_in_its_wing(library: str, allowed: tuple[str, ...]) -> None:
    offenders = [
        _where(path)
        for path in _modules()
        if library in _imported(path) and not _where(path).startswith(allowed)
    ]
    assert offenders == [], f"{library} imported outside {allowed or 'nowhere'}: {offenders}"


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        _where(path): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by job (over {MAX_LINES} lines): {long}"


def test_every_wing_says_what_it_owns() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        if init.parent.name == "migrations":
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{_where(init)} has no docstring saying what the wing owns"


def test_the_first_public_address_of_record_usage_still_works() -> None:
    # README documents it for programs; it moved into the usage wing.
    from billing_core.usage import import_csv
    from billing_core.usage_import import record_usage

    assert record_usage is import_csv.record_usage
