"""The project's error family: every message says what is wrong and what to do."""

from __future__ import annotations


class BillingError(Exception):
    """Base of every error this project raises on purpose; its message is shown to people."""

    #: CLI exit code when this error ends a command.
    exit_code = 1


class ConfigError(BillingError):
    """Settings are missing or invalid (environment, secrets.toml, command-line options)."""

    exit_code = 2


class DatabaseError(BillingError):
    """The database cannot be opened, migrated or written."""

    exit_code = 2


class ValidationError(BillingError):
    """Input data (a CSV file, a form, an API response) is malformed; nothing was written."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        full = message
        if self.problems:
            full += "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(full)


class MoneyError(BillingError):
    """An operation would lose money exactness: mixed currencies, floats, unknown currency."""


class ExchangeRateMissing(BillingError):
    """An invoice needs an exchange rate that was not recorded for its period."""


class LockHeld(BillingError):
    """Another run holds the lock for this period."""

    exit_code = 3


class CostSourceError(BillingError):
    """AWS Cost Explorer could not be read (credentials, permissions, throttling, bad data)."""


class PaymentProviderError(BillingError):
    """Stripe refused or failed a request."""


class PermissionDenied(BillingError):
    """The signed-in user's role does not allow this action."""

    exit_code = 2


class StaleVersion(BillingError):
    """The object an admin acted on changed since their page showed it; nothing was written."""
