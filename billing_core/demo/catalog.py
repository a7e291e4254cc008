"""The demo world: plans, customers, AWS services and a deterministic cost model.

Everything is derived from fixed seeds, so two seeds of the demo give the same figures and
tests can rely on them.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from decimal import Decimal

from billing_core.periods import Period


@dataclass(frozen=True)
class DemoMetric:
    metric: str
    unit: str
    included: Decimal
    unit_price: Decimal


@dataclass(frozen=True)
class DemoPlan:
    name: str
    currency: str
    base_fee_minor: int
    markup_pct: Decimal
    aws_spend_limit_minor: int | None
    metrics: tuple[DemoMetric, ...]


@dataclass(frozen=True)
class DemoCustomer:
    key: str
    name: str
    email: str
    currency: str
    plan: str
    accounts: tuple[str, ...]
    tag: str
    collection_method: str = "charge_automatically"
    # Rough monthly AWS spend in USD, spread over services by the cost model.
    monthly_usd: int = 500
    services: tuple[str, ...] = field(default_factory=tuple)


PLANS: tuple[DemoPlan, ...] = (
    DemoPlan(
        "indie",
        "EUR",
        2000,
        Decimal("0"),
        50000,
        (
            DemoMetric("api_calls", "calls", Decimal(1_000_000), Decimal("0.0004")),
            DemoMetric("storage_gb", "GB", Decimal(50), Decimal("0.10")),
            DemoMetric("seats", "users", Decimal(3), Decimal("3.00")),
        ),
    ),
    DemoPlan(
        "studio",
        "EUR",
        9900,
        Decimal("10"),
        300000,
        (
            DemoMetric("api_calls", "calls", Decimal(10_000_000), Decimal("0.0003")),
            DemoMetric("storage_gb", "GB", Decimal(500), Decimal("0.08")),
            DemoMetric("seats", "users", Decimal(10), Decimal("3.00")),
            DemoMetric("clusters", "clusters", Decimal(1), Decimal("80.00")),
        ),
    ),
    DemoPlan(
        "enterprise",
        "USD",
        49900,
        Decimal("5"),
        None,
        (
            DemoMetric("api_calls", "calls", Decimal(100_000_000), Decimal("0.0002")),
            DemoMetric("storage_gb", "GB", Decimal(5000), Decimal("0.05")),
            DemoMetric("licences", "licences", Decimal(10), Decimal("15.00")),
            DemoMetric("clusters", "clusters", Decimal(3), Decimal("80.00")),
            DemoMetric("seats", "users", Decimal(50), Decimal("3.00")),
        ),
    ),
)

SERVICES: tuple[str, ...] = (
    "Amazon Elastic Compute Cloud - Compute",
    "Amazon Simple Storage Service",
    "Amazon Relational Database Service",
    "AWS Lambda",
    "Amazon CloudFront",
    "Amazon DynamoDB",
    "Amazon Elastic Kubernetes Service",
    "Amazon Elastic Load Balancing",
    "Amazon Virtual Private Cloud",
    "Amazon CloudWatch",
    "Amazon ElastiCache",
    "Amazon Simple Queue Service",
    "Amazon Route 53",
    "AWS Key Management Service",
    "Amazon OpenSearch Service",
)

CUSTOMERS: tuple[DemoCustomer, ...] = (
    DemoCustomer(
        "acme",
        "Acme Analytics GmbH",
        "billing@acme-analytics.example",
        "EUR",
        "studio",
        ("111111111111",),
        "acme",
        monthly_usd=1800,
        services=SERVICES[:9],
    ),
    DemoCustomer(
        "birch",
        "Birch & Co",
        "accounts@birch.example",
        "EUR",
        "indie",
        ("222222222222",),
        "birch",
        monthly_usd=140,
        services=(SERVICES[1], SERVICES[3], SERVICES[4], SERVICES[5]),
    ),
    DemoCustomer(
        "cobalt",
        "Cobalt Robotics Inc",
        "ap@cobalt-robotics.example",
        "USD",
        "enterprise",
        ("333333333333", "333333333334"),
        "cobalt",
        monthly_usd=9200,
        services=SERVICES,
    ),
    DemoCustomer(
        "dune",
        "Dune Media SARL",
        "finance@dune-media.example",
        "EUR",
        "studio",
        ("444444444444",),
        "dune",
        collection_method="send_invoice",
        monthly_usd=2600,
        services=SERVICES[:5] + SERVICES[9:12],
    ),
    DemoCustomer(
        "ember",
        "Ember Health Ltd",
        "invoices@emberhealth.example",
        "USD",
        "enterprise",
        ("555555555555",),
        "ember",
        monthly_usd=6400,
        services=SERVICES[:12],
    ),
    DemoCustomer(
        "fjord",
        "Fjord Games AS",
        "billing@fjordgames.example",
        "EUR",
        "indie",
        ("666666666666",),
        "fjord",
        monthly_usd=320,
        services=(SERVICES[0], SERVICES[1], SERVICES[3], SERVICES[5], SERVICES[9]),
    ),
    DemoCustomer(
        "granite",
        "Granite Logistics LLC",
        "ap@granite-logistics.example",
        "USD",
        "enterprise",
        ("777777777777",),
        "granite",
        collection_method="send_invoice",
        monthly_usd=4100,
        services=SERVICES[:8] + SERVICES[12:],
    ),
    DemoCustomer(
        "harbor",
        "Harbor Studio BV",
        "money@harbor-studio.example",
        "EUR",
        "studio",
        ("888888888888",),
        "harbor",
        monthly_usd=1100,
        services=SERVICES[:6] + SERVICES[9:11],
    ),
    DemoCustomer(
        "iris",
        "Iris Labs SAS",
        "finance@irislabs.example",
        "EUR",
        "indie",
        ("999999999999",),
        "iris",
        monthly_usd=90,
        services=(SERVICES[1], SERVICES[3], SERVICES[4]),
    ),
)

# Spend in these accounts belongs to no customer: the company's own tooling.
UNATTRIBUTED_ACCOUNTS: tuple[str, ...] = ("123456789012",)
# Demo exchange rate source, recorded on every demo invoice that needed a rate.
FX_SOURCE = "demo: fixed monthly reference rate"


def rng(*parts: object) -> random.Random:
    """A random generator seeded from the given parts (stable across Python versions)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def usd_to(currency: str, period: Period) -> Decimal:
    """The demo rate from USD to `currency` for a period (10 decimals at most)."""
    if currency == "USD":
        return Decimal(1)
    wobble = Decimal(rng("fx", currency, period).randint(-150, 150)) / Decimal(10_000)
    base = {"EUR": Decimal("0.9200"), "GBP": Decimal("0.7900")}.get(currency, Decimal(1))
    return base + wobble


def monthly_service_costs(customer: DemoCustomer, period: Period) -> dict[str, Decimal]:
    """Usage cost in USD per service for a closed month (10 decimals, as AWS sends them)."""
    r = rng("month", customer.key, period)
    # Gentle growth over time plus noise, so charts show a trend.
    index = period.year * 12 + period.month - (2025 * 12 + 1)
    growth = Decimal(1) + Decimal(index) * Decimal("0.015")
    weights = [Decimal(r.randint(5, 100)) for _ in customer.services]
    total_weight = sum(weights, Decimal(0))
    out: dict[str, Decimal] = {}
    for service, weight in zip(customer.services, weights, strict=True):
        noise = Decimal(r.randint(900, 1100)) / Decimal(1000)
        amount = Decimal(customer.monthly_usd) * growth * weight / total_weight * noise
        out[service] = amount.quantize(Decimal("0.0000000001"))
    return out
