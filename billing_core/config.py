"""One settings object for the dashboard and the CLI.

Values come from `.streamlit/secrets.toml` (top-level keys, any case) overridden by environment
variables. Secrets are SecretStr so they never appear in logs, reprs or exports.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from billing_core.errors import ConfigError
from billing_core.payments.dunning import CollectionsPolicy

#: Where the demo world lives unless DATABASE_URL says otherwise (live: the field default).
DEMO_DATABASE_URL = "sqlite:///data/demo.db"
DEFAULT_SECRETS_FILE = Path(".streamlit/secrets.toml")

# Environment variables that show AWS credentials are configured through boto3's standard chain.
_AWS_CREDENTIAL_HINTS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


class Settings(BaseSettings):
    """Every setting, with its default and a one-line help (the README lists them all)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str = Field(
        "sqlite:///data/billing.db",
        description="SQLAlchemy URL of the database.",
        repr=False,  # may hold a password
    )
    database_lock_timeout_seconds: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="How long a write waits for another writer's lock before failing clearly.",
    )
    billing_mode: Literal["auto", "demo", "live"] = Field(
        "auto", description="demo or live; auto picks live when AWS or Stripe is configured."
    )
    aws_region: str = Field("us-east-1", description="Region of the Cost Explorer endpoint.")
    cost_metric: Literal["UnblendedCost", "NetUnblendedCost", "AmortizedCost", "BlendedCost"] = (
        Field("UnblendedCost", description="Cost Explorer metric billed to customers.")
    )
    cost_group_by: Literal["LINKED_ACCOUNT", "TAG"] = Field(
        "LINKED_ACCOUNT", description="Attribute costs by linked account or by a tag."
    )
    cost_tag_key: str = Field("customer", description="Cost-allocation tag key for TAG mode.")
    cost_snapshot_ttl_seconds: int = Field(
        6 * 3600, ge=60, description="Age after which cost snapshots are refreshed."
    )
    cost_currency: str = Field("USD", description="Currency AWS bills in.")
    shared_accounts: list[str] = Field(
        default_factory=list,
        description="Linked account ids whose spend no customer owns (comma-separated).",
    )
    shared_services: list[str] = Field(
        default_factory=list,
        description="Cost Explorer services whose spend no customer owns (comma-separated).",
    )
    shared_cost_rule: Literal["unbilled", "proportional", "even", "weights"] = Field(
        "unbilled",
        description="How unattributed and shared AWS spend is allocated to customers.",
    )
    shared_cost_weights: dict[int, Decimal] = Field(
        default_factory=dict,
        description="Customer id=weight pairs for SHARED_COST_RULE=weights (e.g. 3=2,7=1).",
    )
    stripe_api_key: SecretStr | None = Field(None, description="Stripe secret key (sk_...).")
    stripe_api_base: str | None = Field(
        None, description="Stripe API address; set to a local Stripe emulator in tests."
    )
    stripe_webhook_secret: SecretStr | None = Field(
        None, description="Signing secret of the Stripe webhook endpoint (whsec_...)."
    )
    webhook_max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Webhook bodies larger than this are refused (413)."
    )
    webhook_read_timeout_seconds: float = Field(
        10.0, gt=0, description="A webhook body not fully received within this gets 408."
    )
    webhook_idle_timeout_seconds: int = Field(
        5, ge=1, description="A webhook connection sending no complete request is closed."
    )
    webhook_max_connections: int = Field(
        100, ge=1, description="Webhook connections served at once; more are answered 503."
    )
    webhook_shutdown_grace_seconds: int = Field(
        30, ge=0, description="On SIGTERM, how long in-flight webhook requests may finish."
    )
    stripe_requests_per_second: float = Field(
        20.0, gt=0, description="Client-side rate limit for Stripe calls (test mode allows 25)."
    )
    stripe_concurrency: int = Field(4, ge=1, le=32, description="Parallel Stripe calls.")
    admin_emails: list[str] = Field(
        default_factory=list, description="Emails (or @domain) with the admin role."
    )
    viewer_emails: list[str] = Field(
        default_factory=list, description="Emails (or @domain) with the viewer role."
    )
    auth_proxy_header: str | None = Field(
        None, description="Header with the signed-in email set by a trusted reverse proxy."
    )
    reconcile_tolerance_pct: Decimal = Field(
        Decimal("0.5"), ge=0, description="Differences below this percent are noise."
    )
    alert_thresholds_pct: list[int] = Field(
        default_factory=lambda: [80, 100], description="Usage alert thresholds in percent."
    )
    sns_topic_arn: str | None = Field(None, description="SNS topic for alerts (optional).")
    run_lock_stale_seconds: int = Field(
        300, ge=10, description="A run lock without heartbeat for this long may be taken over."
    )
    collections_reminder_days: list[int] = Field(
        default_factory=lambda: [-3, 7, 14],
        description="Collections: reminder days from the due date (negative: before it).",
    )
    collections_final_notice_day: int = Field(
        21, description="Collections: days past the due date when the final notice goes out."
    )
    collections_uncollectible_after_days: int = Field(
        45, description="Collections: days past the due date when an invoice is uncollectible."
    )

    @field_validator("admin_emails", "viewer_emails", mode="before")
    @classmethod
    def _split_emails(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip().lower() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [str(v).strip().lower() for v in value if str(v).strip()]
        return value

    @field_validator("shared_accounts", "shared_services", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("shared_cost_weights", mode="before")
    @classmethod
    def _split_weights(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        out: dict[str, str] = {}
        for pair in (p.strip() for p in value.split(",")):
            if not pair:
                continue
            cid, sep, weight = pair.partition("=")
            if not sep or not cid.strip() or not weight.strip():
                raise ValueError(f"{pair!r} is not customer_id=weight; write pairs such as 3=2,7=1")
            out[cid.strip()] = weight.strip()
        return out

    @field_validator("shared_cost_weights")
    @classmethod
    def _weights_not_negative(cls, value: dict[int, Decimal]) -> dict[int, Decimal]:
        for cid, weight in value.items():
            if not weight.is_finite() or weight < 0:
                raise ValueError(f"the weight of customer {cid} must be a number of 0 or more")
        return value

    @field_validator("alert_thresholds_pct", "collections_reminder_days", mode="before")
    @classmethod
    def _split_ints(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a comma-separated list of whole numbers"
                ) from None
        return value

    @model_validator(mode="after")
    def _collections_policy_is_sound(self) -> Settings:
        self.collections_policy  # noqa: B018  (raises ValueError with what to change)
        return self

    @property
    def collections_policy(self) -> CollectionsPolicy:
        """The dunning plan of `python -m billing_core collections` (payments/dunning.py)."""
        try:
            return CollectionsPolicy.of(
                self.collections_reminder_days,
                self.collections_final_notice_day,
                self.collections_uncollectible_after_days,
            )
        except ValueError as exc:
            raise ValueError(
                f"the collections policy (COLLECTIONS_REMINDER_DAYS, COLLECTIONS_FINAL_NOTICE_DAY, "
                f"COLLECTIONS_UNCOLLECTIBLE_AFTER_DAYS) is not sound: {exc}"
            ) from None

    @field_validator("stripe_api_key", "stripe_webhook_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("stripe_api_key")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().startswith("sk_xxx"):
            raise ValueError("is still the placeholder from secrets.toml.example")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() merges the secrets file and the environment it is given, so tests
        # and callers control both explicitly instead of reading os.environ behind our back.
        return (init_settings,)

    @property
    def aws_configured(self) -> bool:
        return bool(self._environ_aws)

    _environ_aws: bool = False

    @property
    def mode(self) -> Literal["demo", "live"]:
        if self.billing_mode != "auto":
            return self.billing_mode
        if self.stripe_api_key is not None or self._environ_aws:
            return "live"
        return "demo"

    @property
    def stripe_enabled(self) -> bool:
        """Pushing to Stripe needs a key or a local emulator address."""
        return self.stripe_api_key is not None or bool(self.stripe_api_base)

    def safe_summary(self) -> dict[str, str]:
        """Settings fit for a log line or a page: secrets shown only as set / not set."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "set"
            elif value is None:
                out[name] = "not set"
            elif name == "database_url":
                out[name] = _hide_password(str(value))
            else:
                out[name] = str(value)
        out["mode"] = self.mode
        return out


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def read_secrets_file(path: Path) -> dict[str, Any]:
    """Top-level keys of secrets.toml, lower-cased; tables such as [auth] are skipped here."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML ({exc}). Fix the file or compare it with "
            ".streamlit/secrets.toml.example."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}.") from None
    return {k.lower(): v for k, v in data.items() if not isinstance(v, dict)}


def load_settings(
    environ: Mapping[str, str] | None = None, secrets_path: Path | None = None
) -> Settings:
    """Build the settings from a secrets file and an environment (defaults: the real ones)."""
    env = dict(os.environ if environ is None else environ)
    if secrets_path is None:
        secrets_path = Path(env.get("BILLING_SECRETS_FILE", str(DEFAULT_SECRETS_FILE)))
    values: dict[str, Any] = read_secrets_file(secrets_path)
    fields = Settings.model_fields
    for key, value in env.items():
        name = key.lower()
        if name in fields:
            values[name] = value
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        problems = [_problem(err["loc"], err["msg"]) for err in exc.errors()]
        raise ConfigError("Invalid settings: " + "; ".join(problems) + ".") from None
    aws = any(env.get(hint) for hint in _AWS_CREDENTIAL_HINTS)
    object.__setattr__(settings, "_environ_aws", aws)
    if "database_url" not in values and settings.mode == "demo":
        # The demo world gets a file of its own, so configuring credentials later never turns
        # the seeded demo into live books (live mode refuses a demo database anyway).
        object.__setattr__(settings, "database_url", DEMO_DATABASE_URL)
    _check_demo_stripe(settings)
    return settings


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    """'SETTING: what is wrong'; a check across settings names them in its message."""
    where = ".".join(str(p) for p in loc).upper()
    return f"{where}: {msg}" if where else msg.removeprefix("Value error, ")


def _check_demo_stripe(settings: Settings) -> None:
    """Demo mode talks to a local Stripe test server only, never to a real Stripe account."""
    if settings.mode != "demo" or settings.stripe_api_key is None:
        return
    key = settings.stripe_api_key.get_secret_value()
    if key.startswith(("sk_live_", "rk_live_")):
        raise ConfigError(
            "BILLING_MODE is demo but STRIPE_API_KEY is a live key: demo mode never talks to a "
            "real Stripe account. Remove the key, or run in live mode on the live database."
        )
    base = settings.stripe_api_base or ""
    host = urlsplit(base).hostname if base else None
    if host is None or not _loopback(host):
        raise ConfigError(
            "BILLING_MODE is demo and a Stripe key is set, but STRIPE_API_BASE does not point "
            "at a local Stripe test server: demo mode never talks to a real Stripe account. "
            "Set STRIPE_API_BASE=http://127.0.0.1:12111 (python -m tests.support.stripe_server) "
            "or remove STRIPE_API_KEY."
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
