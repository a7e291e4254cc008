"""Customers: CSV import (validated whole before writing) and lookups.

Plan, currency, AWS accounts and tag value are effective-dated (customers/terms.py): a row's
values apply from its `effective_from` month (default: the month after the running one), never
from a month that has started or closed; a new customer's values apply from the start.
Name, Stripe customer id and collection method change at once: they do not price a month."""

from __future__ import annotations

import csv
import io
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.customers.terms import (
    EARLIEST,
    Terms,
    first_changeable,
    owned_before,
    set_terms,
    start_terms,
    terms_for,
    terms_in_force,
)
from billing_core.errors import ConfigError, MoneyError, ValidationError
from billing_core.models import Customer, CustomerAccount, CustomerTerms, Plan
from billing_core.money import normalize_currency
from billing_core.periods import Period, utcnow
from billing_core.versions import bump

CSV_COLUMNS = ("name", "email", "currency", "plan", "aws_account_ids", "cost_tag_value")
OPTIONAL_COLUMNS = ("stripe_customer_id", "collection_method", "effective_from")
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
    #: The month plan, currency, accounts and tag apply from (None: the earliest allowed).
    effective_from: Period | None = None


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
        effective_from = None
        if data.get("effective_from"):
            try:
                effective_from = Period.parse(data["effective_from"])
            except ConfigError as exc:
                errs.append(f"effective_from: {exc}")
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
                effective_from=effective_from,
            )
        )
    if problems:
        raise ValidationError(
            f"The customers CSV has {len(problems)} problem(s); nothing was imported:", problems
        )
    if not rows:
        raise ValidationError("The customers CSV has a header but no rows; nothing was imported.")
    return rows


def import_customers(
    session: Session, data: bytes, *, actor: Identity, now: datetime | None = None
) -> ImportResult:
    """Create or update customers from CSV bytes; re-importing the same file changes nothing.

    Raises ValidationError, writing nothing, for a bad row, an `effective_from` before the month
    after the running one (it would reprice a started or closed month), or an AWS account that
    two customers would own in the same month.
    """
    require(actor, "admin", "import customers")
    now = now or utcnow()
    earliest = first_changeable(now)
    plans = {p.name: p for p in session.exec(select(Plan)).all()}
    try:
        rows = parse_customers_csv(decode_csv(data, "customers"), set(plans))
    except csv.Error as exc:
        raise ValidationError(
            f"The customers file is not a readable CSV file ({exc}); nothing was imported."
        ) from None
    existing = {c.email: c for c in session.exec(select(Customer)).all()}
    stripe_owners = {c.stripe_customer_id: c for c in existing.values() if c.stripe_customer_id}
    conflicts = []
    for row in rows:
        current = existing.get(row.email)
        if row.effective_from is not None and row.effective_from < earliest:
            conflicts.append(
                f"line {row.line}: effective_from {row.effective_from} would reprice a month "
                f"that has already started or closed; changes apply from {earliest} at the "
                "earliest"
            )
        row.effective_from = row.effective_from or earliest
        holder = stripe_owners.get(row.stripe_customer_id or "")
        if holder is not None and (current is None or holder.id != current.id):
            # The same Stripe customer billed twice would charge one card for two customers.
            conflicts.append(
                f"line {row.line}: stripe_customer_id {row.stripe_customer_id} belongs to "
                f"another customer ({holder.email})"
            )
    # An account owned by two customers in one month would bill its costs twice or move them.
    conflicts.extend(_account_conflicts(session, rows, existing))
    if conflicts:
        raise ValidationError("Nothing was imported:", conflicts)
    result = ImportResult()
    for row in rows:
        customer = existing.get(row.email)
        _upsert(session, row, plans[row.plan], customer, result, actor.actor, now)
    session.flush()
    return result


def _account_conflicts(
    session: Session, rows: Sequence[CustomerRow], existing: dict[str, Customer]
) -> list[str]:
    """Accounts the file gives a customer in a month in which another customer owns them."""
    in_file = {existing[r.email].id: r for r in rows if r.email in existing}
    months = {EARLIEST} | {
        Period.parse(p) for p in session.exec(select(CustomerTerms.effective_from))
    }
    months |= {r.effective_from for r in rows if r.effective_from is not None}
    before = {
        r.email: owned_before(session, r.account_ids, r.effective_from or EARLIEST) for r in rows
    }
    emails = {c.id: email for email, c in existing.items()}
    found: dict[tuple[int, str], str] = {}
    for month in sorted(months):
        owners: dict[str, str] = {}
        for cid, terms in terms_in_force(session, month).items():
            row = in_file.get(cid)
            if row is None or month < (row.effective_from or EARLIEST):
                owners.update(dict.fromkeys(terms.account_ids, emails.get(cid, "?")))
        for row in rows:
            if row.email in existing and month < (row.effective_from or EARLIEST):
                continue
            for acct in row.account_ids:
                new_before = row.email not in existing and month < (row.effective_from or EARLIEST)
                if new_before and acct in before[row.email]:
                    continue  # a new customer takes it over from effective_from only
                owner = owners.get(acct)
                if owner is not None and owner != row.email:
                    found.setdefault(
                        (row.line, acct),
                        f"line {row.line}: AWS account {acct} belongs to another customer "
                        f"({owner}) in {month}",
                    )
    return [found[key] for key in sorted(found)]


def _snapshot(customer: Customer, terms: Terms | None) -> dict[str, object]:
    return {
        "name": customer.name,
        "currency": terms.currency if terms else customer.currency,
        "plan_id": terms.plan_id if terms else None,
        "aws_account_ids": list(terms.account_ids) if terms else [],
        "cost_tag_value": terms.cost_tag_value if terms else None,
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
    now: datetime,
) -> None:
    starts = row.effective_from or first_changeable(now)
    values: dict[str, object] = {
        "plan_id": plan.id,
        "currency": row.currency,
        "cost_tag_value": row.cost_tag_value,
        "account_ids": row.account_ids,
    }
    if customer is None:
        customer = Customer(name=row.name, email=row.email, currency=row.currency)
        session.add(customer)
        session.flush()
        before = None
        # Nothing is billed yet: its values apply from the start, except accounts another
        # customer owned before `starts`, which it takes over from `starts` on.
        earlier = owned_before(session, row.account_ids, starts)
        early = [a for a in row.account_ids if a not in earlier]
        start_terms(session, customer, now=now, **(values | {"account_ids": early}))
        if earlier:
            set_terms(session, customer, starts=starts, now=now, account_ids=row.account_ids)
    else:
        before = _snapshot(customer, terms_for(session, customer.id or 0, starts))
        set_terms(session, customer, starts=starts, now=now, **values)
    customer.name = row.name
    customer.collection_method = row.collection_method
    if row.stripe_customer_id:
        customer.stripe_customer_id = row.stripe_customer_id
    session.add(customer)
    session.flush()
    after = _snapshot(customer, terms_for(session, customer.id or 0, starts))
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
        after=after | {"from": str(starts if before is not None else EARLIEST)},
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
