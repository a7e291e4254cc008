"""Cost Explorer failures as sentences a person can act on (costs/cost_explorer.py calls these).

botocore's exceptions are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any

from billing_core.errors import CostSourceError

#: Error codes AWS throttles Cost Explorer with (both are retried, both are explained).
THROTTLING_CODES = frozenset({"LimitExceededException", "ThrottlingException"})
#: Seconds to wait before each retry of a throttled request; then we give up.
BACKOFF_SECONDS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)


def describe_error(exc: BaseException, doing: str) -> CostSourceError:
    """A botocore/boto3 failure as a sentence that says what to do."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return CostSourceError(
            f"No AWS credentials found while {doing}: configure the standard AWS chain "
            "(AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an instance role), "
            "or run in demo mode."
        )
    if isinstance(exc, NoRegionError):
        return CostSourceError(f"No AWS region while {doing}: set AWS_REGION=us-east-1.")
    if isinstance(exc, EndpointConnectionError):
        return CostSourceError(
            f"Cannot reach Cost Explorer while {doing} ({exc}); check the network, "
            "AWS_REGION and AWS_ENDPOINT_URL_COST_EXPLORER."
        )
    if isinstance(exc, ClientError):
        return _describe_client_error(exc, doing)
    if isinstance(exc, BotoCoreError):
        return CostSourceError(f"Cost Explorer failed while {doing}: {exc}.")
    return CostSourceError(f"Cost Explorer failed while {doing}: {type(exc).__name__}: {exc}.")


def _describe_client_error(exc: Any, doing: str) -> CostSourceError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", "")).strip()
    operation = getattr(exc, "operation_name", "GetCostAndUsage")
    if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
        if "not enabled" in message.lower():
            return CostSourceError(
                f"Cost Explorer is not enabled for this AWS account ({doing}): open the "
                "Billing console, enable Cost Explorer, and try again after about 24 hours."
            )
        return CostSourceError(
            f"Access denied while {doing}: the AWS identity in use needs the IAM permission "
            f"ce:{operation} (and ce:GetCostForecast for the forecast). AWS said: {message}"
        )
    if code in ("UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException"):
        return CostSourceError(
            f"AWS did not accept the credentials while {doing} ({code}); refresh or replace "
            "them (AWS_PROFILE, AWS_ACCESS_KEY_ID)."
        )
    if code in THROTTLING_CODES:
        return CostSourceError(
            f"Cost Explorer kept throttling while {doing} ({code} after "
            f"{len(BACKOFF_SECONDS)} retries); try again in a few minutes."
        )
    if code == "DataUnavailableException":
        return CostSourceError(
            f"Cost Explorer has no data yet while {doing} (DataUnavailableException): data "
            "appears up to 24 hours after Cost Explorer is enabled or a month starts. Try later."
        )
    if code == "BillExpirationException":
        return CostSourceError(f"Cost Explorer no longer holds that bill ({doing}): {message}")
    if code in ("InvalidNextTokenException", "RequestChangedException"):
        return CostSourceError(
            f"Cost Explorer's paging broke off while {doing} ({code}); nothing was stored, "
            "try the refresh again."
        )
    return CostSourceError(f"Cost Explorer refused the request while {doing}: {code}: {message}")
