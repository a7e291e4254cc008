"""AWS Cost Explorer adapter: client, paged requests, strict parsing, errors people can act on.

Every request costs USD 0.01, so this module counts each one it sends (retries included) and
never retries behind our back: botocore's own retries are switched off and throttling
(`LimitExceededException`) is retried here, on an explicit, tested schedule.

A fetch asks two questions per period:
- charges: grouped by linked account (or a cost-allocation tag) and SERVICE, with credits,
  refunds and tax filtered out; stored with record type "Usage";
- adjustments: credits, refunds and tax grouped by account (or tag) and RECORD_TYPE, since
  AWS allows only two group-bys; stored with the record type as their service name (Cost
  Explorer itself lists tax as the service "Tax").
Charges plus adjustments is the account's net bill, and nothing is counted twice.

Grouped by tag, untagged spend (and AWS tax and credits, which AWS never tags) would say
nothing about whose it is, so a TAG fetch asks both questions twice: by tag (tagged rows kept,
the untagged group dropped) and, for untagged spend only (a `Tags` filter with `ABSENT`), by
LINKED_ACCOUNT. Untagged rows thus carry their account (and an empty tag value), which
attribution falls back on (costs/attribution.py); the total is unchanged.

Parsing happens fully in memory before anything is stored, so a malformed page means nothing
from that fetch is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, NamedTuple

from billing_core.config import Settings

# Re-exported: callers read the retry schedule and the error sentences as ce.<name>.
from billing_core.costs.ce_errors import BACKOFF_SECONDS as BACKOFF_SECONDS
from billing_core.costs.ce_errors import THROTTLING_CODES as THROTTLING_CODES
from billing_core.costs.ce_errors import describe_error as describe_error
from billing_core.errors import CostSourceError
from billing_core.money import KNOWN
from billing_core.periods import Period, as_utc

log = logging.getLogger(__name__)

#: What AWS charges for one Cost Explorer API request.
USD_PER_REQUEST = Decimal("0.01")
#: Record types kept apart from usage (and netted with it).
ADJUSTMENT_TYPES: tuple[str, ...] = ("Credit", "Refund", "Tax")
USAGE = "Usage"
# Cost Explorer sends at most 10 decimals; the CostLine column holds exactly that many.
_MAX_PLACES = 10
_SMALLEST = Decimal(1).scaleb(-_MAX_PLACES)
_FORECAST_METRICS = {
    "UnblendedCost": "UNBLENDED_COST",
    "NetUnblendedCost": "NET_UNBLENDED_COST",
    "AmortizedCost": "AMORTIZED_COST",
    "BlendedCost": "BLENDED_COST",
}

Granularity = Literal["DAILY", "MONTHLY"]
QueryKind = Literal["usage", "adjustments", "untagged_usage", "untagged_adjustments"]
#: The questions of a LINKED_ACCOUNT fetch; a TAG fetch asks `UNTAGGED_KINDS` too.
KINDS: tuple[QueryKind, ...] = ("usage", "adjustments")
UNTAGGED_KINDS: tuple[QueryKind, ...] = ("untagged_usage", "untagged_adjustments")
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class CostQuery:
    """What one fetch asks Cost Explorer for (one period, one grouping, one metric)."""

    period: Period
    granularity: Granularity
    start: date
    end: date  # exclusive, as Cost Explorer expects
    metric: str = "UnblendedCost"
    group_by: str = "LINKED_ACCOUNT"  # or TAG
    tag_key: str = "customer"

    @property
    def group_label(self) -> str:
        """How snapshots record the grouping: LINKED_ACCOUNT or TAG:<key>."""
        return "LINKED_ACCOUNT" if self.group_by == "LINKED_ACCOUNT" else f"TAG:{self.tag_key}"


class CostRow(NamedTuple):
    """One parsed figure: a bucket (day or month), an account or tag value, a service.

    A named tuple: a running month is close to a million of them, and a tuple is built several
    times faster than a frozen dataclass."""

    day: date
    account_id: str | None
    tag_value: str | None
    service: str
    record_type: str
    amount: Decimal
    currency: str
    estimated: bool


@dataclass
class FetchResult:
    """Everything one fetch produced, ready to be stored as a snapshot."""

    query: CostQuery
    rows: list[CostRow] = field(default_factory=list)
    estimated: bool = False
    currency: str = "USD"
    request_count: int = 0
    forecast: Decimal | None = None  # month-end total (actual so far + forecast of the rest)
    forecast_note: str | None = None  # why there is no forecast, when there is none

    @property
    def request_cost(self) -> Decimal:
        return USD_PER_REQUEST * self.request_count


def build_query(
    period: Period,
    now: datetime,
    *,
    metric: str = "UnblendedCost",
    group_by: str = "LINKED_ACCOUNT",
    tag_key: str = "customer",
) -> CostQuery:
    """DAILY up to today for the current month, MONTHLY for a closed one; future is refused."""
    today = as_utc(now).date()
    if period.start > today:
        raise CostSourceError(f"{period} has not started yet; there are no costs to fetch.")
    if group_by not in ("LINKED_ACCOUNT", "TAG"):
        raise CostSourceError(f"COST_GROUP_BY must be LINKED_ACCOUNT or TAG, not {group_by!r}.")
    if period.is_closed(now):
        return CostQuery(period, "MONTHLY", period.start, period.end, metric, group_by, tag_key)
    end = min(today + timedelta(days=1), period.end)
    return CostQuery(period, "DAILY", period.start, end, metric, group_by, tag_key)


def make_client(settings: Settings, *, endpoint_url: str | None = None) -> Any:
    """A boto3 Cost Explorer client: standard credential chain, AWS_ENDPOINT_URL_* honoured.

    botocore's retries are off (one attempt per call) so that every request we pay for is
    one we counted, and throttling is retried by `call` on its own schedule.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="aws-billing-dashboard",
    )
    kwargs: dict[str, Any] = {"region_name": settings.aws_region, "config": config}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return boto3.session.Session().client("ce", **kwargs)


def _by_account(query: CostQuery, kind: QueryKind) -> bool:
    """Whether the first group key of this question is the linked account (else the tag)."""
    return query.group_by == "LINKED_ACCOUNT" or kind in UNTAGGED_KINDS


def _group_definitions(query: CostQuery, kind: QueryKind) -> list[dict[str, str]]:
    first = (
        {"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"}
        if _by_account(query, kind)
        else {"Type": "TAG", "Key": query.tag_key}
    )
    second_key = "SERVICE" if kind in ("usage", "untagged_usage") else "RECORD_TYPE"
    return [first, {"Type": "DIMENSION", "Key": second_key}]


def request_params(query: CostQuery, kind: QueryKind, token: str | None = None) -> dict[str, Any]:
    """The GetCostAndUsage parameters for one page of charges or adjustments (untagged_*:
    of untagged spend only, by linked account)."""
    adjustments = {"Dimensions": {"Key": "RECORD_TYPE", "Values": list(ADJUSTMENT_TYPES)}}
    records: dict[str, Any] = (
        {"Not": adjustments} if kind in ("usage", "untagged_usage") else adjustments
    )
    if kind in UNTAGGED_KINDS:
        untagged = {"Tags": {"Key": query.tag_key, "MatchOptions": ["ABSENT"]}}
        records = {"And": [records, untagged]}
    params: dict[str, Any] = {
        "TimePeriod": {"Start": query.start.isoformat(), "End": query.end.isoformat()},
        "Granularity": query.granularity,
        "Metrics": [query.metric],
        "GroupBy": _group_definitions(query, kind),
        "Filter": records,
    }
    if token:
        params["NextPageToken"] = token
    return params


# --- parsing -------------------------------------------------------------------------------


def _bad(query: CostQuery, what: str) -> CostSourceError:
    return CostSourceError(
        f"Cost Explorer sent a malformed response for {query.period} ({what}); nothing was "
        "stored and the last good figures stay in place. Try again later; if it persists, "
        "report it with this message."
    )


def parse_amount(raw: object, query: CostQuery) -> Decimal:
    """An exact Decimal from Cost Explorer's amount string; anything else is malformed."""
    if not isinstance(raw, str):
        raise _bad(query, f"amount {raw!r} is not a string")
    try:
        value = Decimal(raw)  # surrounding whitespace is allowed, as with strip()
    except InvalidOperation:
        raise _bad(query, f"amount {raw!r} is not a number") from None
    if not value.is_finite():
        raise _bad(query, f"amount {raw!r} is not a finite number")
    # The places are counted from the text when it is a plain decimal (the usual answer), from
    # the Decimal's exponent otherwise: as_tuple() was a visible share of parsing a page.
    dot = raw.find(".")
    if dot < 0 or "e" in raw or "E" in raw or len(raw.rstrip()) - dot - 1 > _MAX_PLACES:
        exp = value.as_tuple().exponent
        if isinstance(exp, int) and exp < -_MAX_PLACES:
            # Below 1e-10 USD is noise no bill shows; the column holds 10 places exactly.
            value = value.quantize(_SMALLEST)
    return value


def _parse_unit(raw: object, query: CostQuery, expected: str) -> str:
    if not isinstance(raw, str) or raw.strip().upper() not in KNOWN:
        raise _bad(query, f"unknown currency unit {raw!r}")
    unit = raw.strip().upper()
    if unit != expected:
        raise CostSourceError(
            f"Cost Explorer reports {query.period} in {unit}, but COST_CURRENCY is {expected}. "
            f"Set COST_CURRENCY={unit} if your AWS bill is in {unit}; nothing was stored."
        )
    return unit


def _parse_key(raw: object, query: CostQuery, kind: QueryKind) -> tuple[str | None, str | None]:
    """(account_id, tag_value) from the first group key; untagged_* rows get tag value ''."""
    if not isinstance(raw, str):
        raise _bad(query, f"group key {raw!r} is not a string")
    if _by_account(query, kind):
        if not raw:
            raise _bad(query, "empty linked account id")
        return raw, None if query.group_by == "LINKED_ACCOUNT" else ""
    prefix = f"{query.tag_key}$"
    if not raw.startswith(prefix):
        raise _bad(query, f"tag group {raw!r} does not start with {prefix!r}")
    # An empty value after the $ is Cost Explorer's way of saying "untagged".
    return None, raw[len(prefix) :]


def _parse_day(raw: object, query: CostQuery) -> date:
    if not isinstance(raw, Mapping):
        raise _bad(query, "TimePeriod missing")
    try:
        day = date.fromisoformat(str(raw.get("Start")))
    except ValueError:
        raise _bad(query, f"TimePeriod start {raw.get('Start')!r} is not a date") from None
    if not query.period.start <= day < query.period.end:
        raise _bad(query, f"a result for {day} lies outside {query.period}")
    return day


def parse_page(
    page: Mapping[str, Any], query: CostQuery, kind: QueryKind, currency: str
) -> list[CostRow]:
    """Rows of one GetCostAndUsage page; raises CostSourceError on anything unexpected."""
    results = page.get("ResultsByTime")
    if not isinstance(results, list):
        raise _bad(query, "ResultsByTime missing")
    rows: list[CostRow] = []
    append = rows.append
    by_account = query.group_by == "LINKED_ACCOUNT"
    metric_name = query.metric
    checked_unit: object = None  # the last unit seen to be the expected one
    for result in results:
        if not isinstance(result, Mapping):
            raise _bad(query, "a result is not an object")
        day = _parse_day(result.get("TimePeriod"), query)
        estimated = bool(result.get("Estimated", False))
        for group in result.get("Groups") or []:
            keys = group.get("Keys") if isinstance(group, Mapping) else None
            if not isinstance(keys, list) or len(keys) != 2:
                raise _bad(query, f"group keys {keys!r} are not two values")
            metric = (group.get("Metrics") or {}).get(metric_name)
            if not isinstance(metric, Mapping):
                raise _bad(query, f"metric {metric_name} missing for {keys!r}")
            first = keys[0]
            account: str | None
            tag: str | None
            if by_account and isinstance(first, str) and first:
                account, tag = first, None
            else:
                account, tag = _parse_key(first, query, kind)
            second = str(keys[1])
            unit = metric.get("Unit")
            if unit != checked_unit or unit is None:
                checked_unit = unit if _parse_unit(unit, query, currency) == unit else None
            append(
                CostRow(
                    day,
                    account,
                    tag,
                    second,
                    USAGE if kind in ("usage", "untagged_usage") else second,
                    parse_amount(metric.get("Amount"), query),
                    currency,
                    estimated,
                )
            )
    return rows


def parse_responses(
    query: CostQuery,
    usage_pages: Iterable[Mapping[str, Any]],
    adjustment_pages: Iterable[Mapping[str, Any]],
    *,
    currency: str,
    request_count: int = 0,
    untagged_pages: tuple[Iterable[Mapping[str, Any]], Iterable[Mapping[str, Any]]] | None = None,
) -> FetchResult:
    """Turn all pages of every question into one FetchResult (the demo uses this too).

    `untagged_pages` (TAG fetches): the untagged charges and adjustments by linked account.
    They replace the tag questions' untagged group, which stays the measure of the total: what
    the accounts do not add up to (AWS rounds every group to 10 decimals; an answer missing)
    is kept as an untagged row without an account, so the fetch's total never changes."""
    result = FetchResult(query=query, currency=currency, request_count=request_count)
    seen: set[tuple[date, str | None, str | None, str, str]] = set()
    # (day, service, record type) -> untagged amount by tag, and the same summed by account.
    untagged_by_tag: dict[tuple[date, str, str], CostRow] = {}
    by_account: dict[tuple[date, str, str], Decimal] = {}
    questions: list[tuple[QueryKind, Iterable[Mapping[str, Any]]]] = [
        ("usage", usage_pages),
        ("adjustments", adjustment_pages),
    ]
    if untagged_pages is not None:
        questions += list(zip(UNTAGGED_KINDS, untagged_pages, strict=True))
    for kind, pages in questions:
        for page in pages:
            for result_by_time in page.get("ResultsByTime") or []:
                if isinstance(result_by_time, Mapping) and result_by_time.get("Estimated"):
                    result.estimated = True
            for row in parse_page(page, query, kind, currency):
                key = (row.day, row.account_id, row.tag_value, row.service, row.record_type)
                if key in seen:
                    # Summing would double count if AWS repeated a group across pages.
                    raise _bad(query, f"the group {key[1] or key[2]!r}/{key[3]} on {key[0]} twice")
                seen.add(key)
                bucket = (row.day, row.service, row.record_type)
                if untagged_pages is not None and kind in KINDS and not row.tag_value:
                    untagged_by_tag[bucket] = row  # replaced by the rows with their account
                    continue
                if kind in UNTAGGED_KINDS:
                    by_account[bucket] = by_account.get(bucket, Decimal(0)) + row.amount
                result.rows.append(row)
    for bucket in sorted(untagged_by_tag.keys() | by_account.keys()):
        whole = untagged_by_tag.get(bucket)
        rest = (whole.amount if whole else Decimal(0)) - by_account.get(bucket, Decimal(0))
        if rest:
            if abs(rest) >= Decimal("0.01"):  # below a cent: AWS's rounding of each group
                log.warning(
                    "untagged %s on %s: %s %s not matched by a linked account; kept untagged",
                    bucket[1],
                    bucket[0],
                    currency,
                    rest,
                )
            day, service, record_type = bucket
            estimated = whole.estimated if whole else False
            result.rows.append(
                CostRow(day, None, "", service, record_type, rest, currency, estimated)
            )
    return result


class FetchFailed(CostSourceError):
    """A fetch failed after spending `request_count` requests; nothing from it is usable."""

    def __init__(self, message: str, *, request_count: int) -> None:
        super().__init__(message)
        self.request_count = request_count


# --- requests ------------------------------------------------------------------------------


class RequestCounter:
    """Counts Cost Explorer requests (each one is billed) for logging and snapshots."""

    def __init__(self) -> None:
        self.count = 0

    @property
    def cost(self) -> Decimal:
        return USD_PER_REQUEST * self.count


def call(
    client: Any,
    operation: str,
    params: Mapping[str, Any],
    *,
    counter: RequestCounter,
    doing: str,
    sleep: Sleep = time.sleep,
    backoff: Sequence[float] = BACKOFF_SECONDS,
) -> dict[str, Any]:
    """One API call; throttling is retried after each delay in `backoff`, then reported."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    method = getattr(client, operation)
    for attempt in range(len(backoff) + 1):
        counter.count += 1
        try:
            response: dict[str, Any] = method(**params)
            return response
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in THROTTLING_CODES and attempt < len(backoff):
                log.warning(
                    "Cost Explorer throttled (%s); retry %d in %.1f s",
                    code,
                    attempt + 1,
                    backoff[attempt],
                )
                sleep(backoff[attempt])
                continue
            raise describe_error(exc, doing) from None
        except (NoCredentialsError, PartialCredentialsError) as exc:
            counter.count -= 1  # refused before anything was sent
            raise describe_error(exc, doing) from None
        except BotoCoreError as exc:
            raise describe_error(exc, doing) from None
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_pages(
    client: Any,
    query: CostQuery,
    kind: QueryKind,
    *,
    counter: RequestCounter,
    sleep: Sleep = time.sleep,
    backoff: Sequence[float] = BACKOFF_SECONDS,
) -> list[dict[str, Any]]:
    """Every page of one question, following NextPageToken until there is none."""
    pages: list[dict[str, Any]] = []
    token: str | None = None
    seen_tokens: set[str] = set()
    while True:
        page = call(
            client,
            "get_cost_and_usage",
            request_params(query, kind, token),
            counter=counter,
            doing=f"reading {kind} for {query.period}",
            sleep=sleep,
            backoff=backoff,
        )
        pages.append(page)
        token = page.get("NextPageToken") or None
        if token is None:
            return pages
        if token in seen_tokens:
            raise _bad(query, "NextPageToken repeats")
        seen_tokens.add(token)


def fetch_forecast(
    client: Any,
    query: CostQuery,
    now: datetime,
    *,
    counter: RequestCounter,
    currency: str,
    sleep: Sleep = time.sleep,
    backoff: Sequence[float] = BACKOFF_SECONDS,
) -> Decimal | None:
    """Cost Explorer's forecast for the rest of the month (today to month end)."""
    today = as_utc(now).date()
    if query.granularity != "DAILY" or today >= query.period.end:
        return None
    response = call(
        client,
        "get_cost_forecast",
        {
            "TimePeriod": {"Start": today.isoformat(), "End": query.period.end.isoformat()},
            "Metric": _FORECAST_METRICS.get(query.metric, "UNBLENDED_COST"),
            "Granularity": "MONTHLY",
        },
        counter=counter,
        doing=f"reading the forecast for {query.period}",
        sleep=sleep,
        backoff=backoff,
    )
    total = response.get("Total")
    if not isinstance(total, Mapping):
        raise _bad(query, "forecast Total missing")
    _parse_unit(total.get("Unit"), query, currency)
    return parse_amount(total.get("Amount"), query)


def fetch_costs(
    client: Any,
    query: CostQuery,
    *,
    now: datetime,
    currency: str,
    sleep: Sleep = time.sleep,
    backoff: Sequence[float] = BACKOFF_SECONDS,
    forecast: bool = True,
) -> FetchResult:
    """Fetch and parse a whole period; raises CostSourceError with the request count spent."""
    counter = RequestCounter()
    try:
        usage = fetch_pages(client, query, "usage", counter=counter, sleep=sleep, backoff=backoff)
        adjustments = fetch_pages(
            client, query, "adjustments", counter=counter, sleep=sleep, backoff=backoff
        )
        untagged = None
        if query.group_by != "LINKED_ACCOUNT":
            # Two more questions (USD 0.01 each per page): whose account the untagged spend is.
            untagged = (
                fetch_pages(
                    client, query, "untagged_usage", counter=counter, sleep=sleep, backoff=backoff
                ),
                fetch_pages(
                    client,
                    query,
                    "untagged_adjustments",
                    counter=counter,
                    sleep=sleep,
                    backoff=backoff,
                ),
            )
        result = parse_responses(
            query, usage, adjustments, currency=currency, untagged_pages=untagged
        )
    except CostSourceError as exc:
        raise FetchFailed(str(exc), request_count=counter.count) from None
    if forecast and query.granularity == "DAILY":
        try:
            rest = fetch_forecast(
                client, query, now, counter=counter, currency=currency, sleep=sleep, backoff=backoff
            )
        except CostSourceError as exc:
            # The forecast is a nicety: the actual figures are still good to store.
            log.warning("no Cost Explorer forecast: %s", exc)
            result.forecast_note = str(exc)
        else:
            if rest is not None:
                # The forecast starts today, whose partial actuals are already in the rows.
                today = as_utc(now).date()
                before_today = sum(
                    (r.amount for r in result.rows if r.day < today), start=Decimal(0)
                )
                result.forecast = before_today + rest
    result.request_count = counter.count
    return result
