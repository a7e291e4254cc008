"""The usage import's first public address, kept so that programs written against it still work.

New code imports `record_usage` from `billing_core.usage.import_csv`.
"""

from billing_core.usage.import_checks import UsageInput
from billing_core.usage.import_csv import import_usage_csv, record_usage

__all__ = ["UsageInput", "import_usage_csv", "record_usage"]
