"""The Stripe wing's gateway, errors and keys, against the local Stripe test server over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from billing_core.stripe import customers as stripe_customers
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.errors import HARMLESS, StripeFailure
from billing_core.stripe.gateway import Gateway, RetryPolicy
from billing_core.stripe.keys import Keys
from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_world import StripeWorld, make_world


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture
def world(server: StripeTestServer, engine) -> StripeWorld:
    return make_world(server, engine)


def _gateway(world: StripeWorld, **policy: int) -> Gateway:
    """No rate limit to speak of, no backoff sleeps."""
    return Gateway(
        world.client, requests_per_second=1000, policy=RetryPolicy(backoff_seconds=0, **policy)
    )


def test_429_5xx_and_409_are_retried_with_the_same_key(world: StripeWorld) -> None:
    gw = Gateway(world.client, requests_per_second=1000, policy=RetryPolicy(backoff_seconds=0))
    world.server.fail_next(2, 429, "/v1/customers")
    world.server.fail_next(1, 503, "/v1/customers")
    world.server.fail_next(1, 409, "/v1/customers")
    stripe_customers.create_customer(
        gw, key="ns-cus-1-create", local_customer_id=1, name="a", email="a@x", install_id="ns"
    )
    log = [(st, k) for _m, p, st, k in world.server.request_log if p == "/v1/customers"]
    assert [st for st, _k in log] == [429, 429, 503, 409, 200]
    assert {k for _st, k in log} == {"ns-cus-1-create"}
    assert (gw.calls, gw.rate_limited) == (5, 2)
    assert len(world.server.customers()) == 1


def test_budgets_run_out_with_a_sentence(world: StripeWorld) -> None:
    world.server.fail_next(10, 500, "/v1/invoices")
    with pytest.raises(
        StripeFailure, match=r"kept failing .*\(after 3 attempts\).*run it again"
    ) as e:
        stripe_invoices.read_invoice(_gateway(world, network_retries=2), "in_x")
    assert e.value.kind == "server" and e.value.transient
    world.server.clear_faults()
    world.server.fail_next(10, 429, "/v1/invoices")
    with pytest.raises(StripeFailure, match="rate limit") as e:
        stripe_invoices.read_invoice(_gateway(world, rate_limit_retries=3), "in_x")
    assert e.value.attempts == 4


def test_stripe_should_retry_false_is_not_retried(world: StripeWorld) -> None:
    world.server.fail_next(1, 500, "/v1/invoices", should_retry=False)
    gw = _gateway(world)
    with pytest.raises(StripeFailure):
        stripe_invoices.read_invoice(gw, "in_x")
    assert gw.calls == 1


def test_only_allowlisted_errors_are_harmless(world: StripeWorld) -> None:
    gw = _gateway(world)
    assert stripe_invoices.invoice_or_none(gw, "in_does_not_exist") is None
    with pytest.raises(StripeFailure) as e:  # a bad request is not "missing": it propagates
        gw.request_or_none("/v1/invoices", {"limit": 1000}, doing="listing")
    assert e.value.kind == "invalid" and not e.value.transient
    assert all(row.reason for row in HARMLESS.values())


def test_writes_need_an_idempotency_key(world: StripeWorld) -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        _gateway(world).request("post", "/v1/customers", {"email": "a@x"}, doing="creating")
    assert world.server.request_count() == 0


def test_every_key_carries_the_namespace() -> None:
    keys = Keys("abcd1234")
    at = datetime(2026, 11, 1, tzinfo=UTC)
    spelled = [
        keys.invoice_step(1, "create"),
        keys.invoice_step(1, "lines"),
        keys.invoice_pay(1, 0),
        keys.customer_create(1),
        keys.test_card(1, "attach"),
        keys.setup_link(1, at),
        keys.default_payment_method("seti_1"),
    ]
    assert all(k.startswith("abcd1234-") for k in spelled)
    assert len(set(spelled)) == len(spelled)
