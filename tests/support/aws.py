"""Cost Explorer peers for tests: moto in server mode, the local stub, and response builders.

Import the fixtures into a test module (`from tests.support.aws import moto_ce, ...`).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from moto.server import ThreadedMotoServer

from billing_core.config import Settings, load_settings
from tests.support.ce_stub import CostExplorerStub

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoCE:
    """A moto server whose Cost Explorer answers come from a queue (see moto/ce/models.py)."""

    def __init__(self, server: ThreadedMotoServer) -> None:
        host, port = server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def queue(self, *results: dict[str, Any]) -> None:
        """Queue responses: each distinct request (params incl. page token) takes the next."""
        reply = requests.post(
            f"{self.url}/moto-api/static/ce/cost-and-usage-results",
            json={"results": list(results)},
            timeout=10,
        )
        assert reply.status_code == 201

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10)


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[ThreadedMotoServer]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def moto_ce(_moto_server: ThreadedMotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoCE]:
    """moto reachable through boto3's standard AWS_ENDPOINT_URL_COST_EXPLORER variable."""
    peer = MotoCE(_moto_server)
    peer.reset()
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_COST_EXPLORER", peer.url)
    yield peer
    peer.reset()


@pytest.fixture
def ce_stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[CostExplorerStub]:
    """The local stub, reachable through AWS_ENDPOINT_URL_COST_EXPLORER."""
    stub = CostExplorerStub().start()
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_COST_EXPLORER", stub.url)
    yield stub
    stub.stop()


def settings(**overrides: str) -> Settings:
    env = {"BILLING_MODE": "live", **{k.upper(): v for k, v in overrides.items()}}
    return load_settings(env, secrets_path=Path("/nonexistent/secrets.toml"))


# --- Cost Explorer-shaped responses ---------------------------------------------------------


def group(
    key: str, second: str, amount: str | Decimal, unit: str = "USD", metric: str = "UnblendedCost"
) -> dict[str, Any]:
    return {"Keys": [key, second], "Metrics": {metric: {"Amount": str(amount), "Unit": unit}}}


def result(
    start: str, end: str, groups: list[dict[str, Any]], estimated: bool = False
) -> dict[str, Any]:
    return {
        "TimePeriod": {"Start": start, "End": end},
        "Total": {},
        "Groups": groups,
        "Estimated": estimated,
    }


def page(*results: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ResultsByTime": list(results), "DimensionValueAttributes": []}
    if token:
        body["NextPageToken"] = token
    return body
