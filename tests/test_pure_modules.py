"""The pure modules (DESIGN.md section 2) import no database, SDK or UI code, not even through
another billing_core module: each is imported alone in a fresh interpreter and what it loaded
is inspected."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PURE = (
    "billing_core.money",
    "billing_core.periods",
    "billing_core.exchange_rates.convert",
    "billing_core.invoicing.pricing",
    "billing_core.invoicing.pricing_memo",
    "billing_core.invoicing.charge_models",
    "billing_core.invoicing.aws_rules",
    "billing_core.invoicing.commitments",
    "billing_core.invoicing.line_text",
    "billing_core.invoicing.figures",
    "billing_core.invoicing.shared_costs",
    "billing_core.reconciliation.diffing",
    "billing_core.usage.projections",
    "billing_core.payments.dunning",
)
FORBIDDEN = ("sqlmodel", "sqlalchemy", "alembic", "stripe", "boto3", "streamlit")

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def _loaded_by(module: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


@pytest.mark.parametrize("module", PURE)
def test_pure_module_loads_no_database_code(module: str) -> None:
    loaded = _loaded_by(module)
    bad = sorted({name.split(".")[0] for name in loaded} & set(FORBIDDEN))
    ours = [name for name in loaded if name.startswith("billing_core")]
    assert bad == [], f"{module} loads {bad} (billing_core modules it loaded: {ours})"
