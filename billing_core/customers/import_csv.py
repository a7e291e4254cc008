"""Customers: CSV import (validated whole before writing) and lookups."""

from __future__ import annotations

import csv
import io
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.errors import MoneyError, ValidationError
from billing_core.models import Customer, CustomerAccount, Plan
from billing_core.money import normalize_currency
from billing_core.periods import utcnow
from billing_core.versions import bump

CSV_COLUMNS = ("name", "email", "currency", "plan", "aws_account_ids", "cost_tag_value")
OPTIONAL_COLUMNS = ("stripe_customer_id", "collection_method")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")
COLLECTION_METHODS = ("charge_automatically", "send_invoice")
#: A customers file is a list of accounts, not a data feed: 10 MiB is over 50,000 customers.
MAX_FILE_BYTES = 10 * 1024 * 1024


@dataclass
class CustomerRow:
    """One validated row of a customers CSV."""

    line: int
    name: str
    email: str
    currency: str
    plan: str
    account_ids: list[str] = field(default_factory=list)
    cost_tag_value: str | None = None
    stripe_customer_id: str | None = None
    collection_method: str = "charge_automatically"


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def read_file(path: Path, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; ValidationError for anything else.

    Reads at most `limit + 1` bytes, so a device (/dev/zero), a pipe or a huge file never fills
    memory: they are refused with what is wrong instead.
    """
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ValidationError(
                f"{path} is not a regular file (a device, a pipe or a folder); save the "
                f"{what} CSV to a file and import that. Nothing was imported."
            )
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise ValidationError(f"Cannot read {path}: {exc.strerror}.") from None
    check_size(data, what, limit)
    return data


def check_size(data: bytes, what: str, limit: int = MAX_FILE_BYTES) -> None:
    """Refuse a file over `limit` bytes with a sentence (uploads and files alike)."""
    if len(data) > limit:
        raise ValidationError(
            f"The {what} file is larger than {limit // (1024 * 1024)} MiB, the most this import "
            "takes; split it into several files. Nothing was imported."
        )


def decode_csv(data: bytes, what: str) -> str:
    """Decode an uploaded file as UTF-8 (a BOM is fine) or say how to fix it."""
    check_size(data, what)
    if not data.strip():
        raise ValidationError(f"The {what} file is empty.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"The {what} file is not UTF-8 text (byte {exc.start}); save it as CSV UTF-8 "
            "and try again."
        ) from None
    if "\0" in text:
        raise ValidationError(
            f"The {what} file holds NUL characters: it is not CSV text. "
            "Save it as CSV UTF-8 and try again."
        )
    return text


def parse_customers_csv(text: str, plans: set[str]) -> list[CustomerRow]:
    """Validate every row; on any problem raise one error listing all of them."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ValidationError(
            f"The customers CSV lacks the column(s) {', '.join(missing)}; the header must be: "
            + ",".join(CSV_COLUMNS + OPTIONAL_COLUMNS)
        )
    rows: list[CustomerRow] = []
    problems: list[str] = []
    seen_emails: dict[str, int] = {}
    seen_accounts: dict[str, int] = {}
    seen_stripe_ids: dict[str, int] = {}
    for index, raw in enumerate(reader, start=2):
        data = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        errs: list[str] = []
        email = data.get("email", "").lower()
        if not data.get("name"):
            errs.append("name is empty")
        if not _EMAIL_RE.match(email):
            errs.append(f"email {email!r} is not an email address")
        elif email in seen_emails:
            errs.append(f"email {email} already on line {seen_emails[email]}")
        currency = data.get("currency", "")
        try:
            currency = normalize_currency(currency)
        except MoneyError as exc:
            errs.append(str(exc))
        plan = data.get("plan", "")
        if plan not in plans:
            errs.append(f"plan {plan!r} does not exist (known: {', '.join(sorted(plans))})")
        accounts = [a.strip() for a in re.split(r"[;\s|]+", data.get("aws_account_ids", "")) if a]
        for acct in accounts:
            if not _ACCOUNT_RE.match(acct):
                errs.append(f"AWS account id {acct!r} must be 12 digits")
            elif acct in seen_accounts:
                errs.append(f"AWS account {acct} already on line {seen_accounts[acct]}")
        method = data.get("collection_method") or "charge_automatically"
        if method not in COLLECTION_METHODS:
            errs.append(f"collection_method must be one of {', '.join(COLLECTION_METHODS)}")
        stripe_id = data.get("stripe_customer_id") or None
        if stripe_id and not stripe_id.startswith("cus_"):
            errs.append(f"stripe_customer_id {stripe_id!r} must start with cus_")
        elif stripe_id and stripe_id in seen_stripe_ids:
            errs.append(
                f"stripe_customer_id {stripe_id} already on line {seen_stripe_ids[stripe_id]}"
            )
        if errs:
            problems.extend(f"line {index}: {e}" for e in errs)
            continue
        seen_emails[email] = index
        if stripe_id:
            seen_stripe_ids[stripe_id] = index
        for acct in accounts:
            seen_accounts[acct] = index
        rows.append(
            CustomerRow(
                line=index,
                name=data["name"],
                email=email,
                currency=currency,
                plan=plan,
                account_ids=accounts,
                cost_tag_value=data.get("cost_tag_value") or None,
                stripe_customer_id=stripe_id,
                collection_method=method,
            )
        )
    if problems:
        raise ValidationError(
            f"The customers CSV has {len(problems)} problem(s); nothing was imported:", problems
        )
    if not rows:
        raise ValidationError("The customers CSV has a header but no rows; nothing was imported.")
    return rows


def import_customers(session: Session, data: bytes, *, actor: Identity) -> ImportResult:
    """Create or update customers from CSV bytes; re-importing the same file changes nothing."""
    require(actor, "admin", "import customers")
    plans = {p.name: p for p in session.exec(select(Plan)).all()}
    try:
        rows = parse_customers_csv(decode_csv(data, "customers"), set(plans))
    except csv.Error as exc:
        raise ValidationError(
            f"The customers file is not a readable CSV file ({exc}); nothing was imported."
        ) from None
    # Accounts already owned by someone else would silently move costs between customers.
    owners = {a.account_id: a.customer_id for a in session.exec(select(CustomerAccount)).all()}
    existing = {c.email: c for c in session.exec(select(Customer)).all()}
    stripe_owners = {c.stripe_customer_id: c for c in existing.values() if c.stripe_customer_id}
    conflicts = []
    for row in rows:
        current = existing.get(row.email)
        for acct in row.account_ids:
            owner = owners.get(acct)
            if owner is not None and (current is None or owner != current.id):
                conflicts.append(f"line {row.line}: AWS account {acct} belongs to another customer")
        holder = stripe_owners.get(row.stripe_customer_id or "")
        if holder is not None and (current is None or holder.id != current.id):
            # The same Stripe customer billed twice would charge one card for two customers.
            conflicts.append(
                f"line {row.line}: stripe_customer_id {row.stripe_customer_id} belongs to "
                f"another customer ({holder.email})"
            )
    if conflicts:
        raise ValidationError("Nothing was imported:", conflicts)
    result = ImportResult()
    for row in rows:
        _upsert(session, row, plans[row.plan], existing.get(row.email), result, actor.actor)
    session.flush()
    return result


def _snapshot(customer: Customer, accounts: Sequence[str]) -> dict[str, object]:
    return {
        "name": customer.name,
        "currency": customer.currency,
        "plan_id": customer.plan_id,
        "aws_account_ids": sorted(accounts),
        "cost_tag_value": customer.cost_tag_value,
        "stripe_customer_id": customer.stripe_customer_id,
        "collection_method": customer.collection_method,
    }


def _upsert(
    session: Session,
    row: CustomerRow,
    plan: Plan,
    customer: Customer | None,
    result: ImportResult,
    actor: str,
) -> None:
    if customer is None:
        customer = Customer(name=row.name, email=row.email, currency=row.currency)
        session.add(customer)
        before = None
        old_accounts: list[str] = []
    else:
        old_accounts = account_ids(session, customer.id)
        before = _snapshot(customer, old_accounts)
    customer.name = row.name
    customer.currency = row.currency
    customer.plan_id = plan.id
    customer.cost_tag_value = row.cost_tag_value
    customer.collection_method = row.collection_method
    if row.stripe_customer_id:
        customer.stripe_customer_id = row.stripe_customer_id
    session.flush()
    if sorted(old_accounts) != sorted(row.account_ids):
        for link in session.exec(
            select(CustomerAccount).where(CustomerAccount.customer_id == customer.id)
        ).all():
            session.delete(link)
        session.flush()
        for acct in row.account_ids:
            session.add(CustomerAccount(customer_id=customer.id or 0, account_id=acct))
    after = _snapshot(customer, row.account_ids)
    if before == after:
        result.unchanged += 1
        return
    customer.updated_at = utcnow()
    if before is not None:
        bump(customer, actor=actor, now=customer.updated_at)  # the plans page's view is stale
    if before is None:
        result.created += 1
    else:
        result.updated += 1
    audit.record(
        session,
        actor=actor,
        action="customer.import",
        target=f"customer:{customer.id}",
        before=before,
        after=after,
    )


def account_ids(session: Session, customer_id: int | None) -> list[str]:
    return list(
        session.exec(
            select(CustomerAccount.account_id).where(CustomerAccount.customer_id == customer_id)
        ).all()
    )


def active_customers(session: Session) -> Sequence[Customer]:
    return session.exec(
        select(Customer).where(col(Customer.active).is_(True)).order_by(col(Customer.name))
    ).all()
