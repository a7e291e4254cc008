import pytest
from sqlmodel import Session, select

from billing_core.auth import Identity
from billing_core.customers.import_csv import import_customers
from billing_core.customers.terms import first_changeable, terms_for
from billing_core.errors import PermissionDenied, ValidationError
from billing_core.models import AuditEntry, Customer, CustomerAccount, CustomerTerms, Plan
from billing_core.periods import utcnow

ADMIN = Identity(email="tester@example.com", role="admin", method="oidc")
HEADER = "name,email,currency,plan,aws_account_ids,cost_tag_value,stripe_customer_id\n"


@pytest.fixture
def plans(session: Session) -> None:
    session.add(Plan(name="indie", currency="EUR", base_fee_minor=2000))
    session.add(Plan(name="studio", currency="EUR", base_fee_minor=9900))
    session.commit()


def test_import_then_reimport_updates_never_duplicates(session: Session, plans: None) -> None:
    data = (
        HEADER + "Acme,Billing@Acme.example,eur,indie,111111111111;222222222222,acme,\n"
        "Birch,b@birch.example,USD,studio,,birch,cus_123\n"
    ).encode()
    first = import_customers(session, data, actor=ADMIN)
    assert (first.created, first.updated) == (2, 0)
    again = import_customers(session, data, actor=ADMIN)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    changed = data.replace(b"Acme,", b"Acme GmbH,").replace(b"222222222222", b"333333333333")
    third = import_customers(session, changed, actor=ADMIN)
    assert (third.created, third.updated) == (0, 1)
    session.commit()
    assert len(session.exec(select(Customer)).all()) == 2
    # The running month keeps its accounts; the change applies from the next month.
    accounts = {a.account_id for a in session.exec(select(CustomerAccount)).all()}
    assert accounts == {"111111111111", "222222222222"}
    acme_id = next(c.id for c in session.exec(select(Customer)) if c.name == "Acme GmbH")
    later = terms_for(session, acme_id or 0, first_changeable(utcnow()))
    assert later is not None and later.account_ids == ("111111111111", "333333333333")
    acme = session.exec(select(Customer).where(Customer.email == "billing@acme.example")).one()
    assert acme.name == "Acme GmbH" and acme.currency == "EUR"
    assert len(session.exec(select(AuditEntry)).all()) == 3


def test_bad_rows_import_nothing_and_list_every_problem(session: Session, plans: None) -> None:
    data = (
        HEADER + "Good,g@x.example,EUR,indie,111111111111,,\n"
        ",not-an-email,XXX,gold,12345,,acct_1\n"
        "Dup,g@x.example,EUR,indie,111111111111,,\n"
    ).encode()
    with pytest.raises(ValidationError) as err:
        import_customers(session, data, actor=ADMIN)
    text = str(err.value)
    for expected in (
        "line 3: name is empty",
        "line 3: email",
        "Unknown currency",
        "plan 'gold' does not exist",
        "must be 12 digits",
        "must start with cus_",
        "line 4: email g@x.example already on line 2",
    ):
        assert expected in text
    assert session.exec(select(Customer)).all() == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
        (b"name,email\nA,a@x.example\n", "lacks"),
        (HEADER.encode(), "no rows"),
    ],
)
def test_malformed_files(session: Session, plans: None, data: bytes, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        import_customers(session, data, actor=ADMIN)


def test_account_owned_by_another_customer_is_refused(session: Session, plans: None) -> None:
    import_customers(
        session, (HEADER + "A,a@x.example,EUR,indie,111111111111,,\n").encode(), actor=ADMIN
    )
    with pytest.raises(ValidationError, match="belongs to another customer"):
        import_customers(
            session, (HEADER + "B,b@x.example,EUR,indie,111111111111,,\n").encode(), actor=ADMIN
        )


@pytest.mark.parametrize(
    "who",
    [
        Identity(email="finance@example.com", role="viewer", method="oidc"),
        Identity(email="stranger@example.com", role=None, method="oidc"),
        Identity(email=None, role=None, method="anonymous"),
    ],
)
def test_only_admins_import_customers(session: Session, plans: None, who: Identity) -> None:
    data = (HEADER + "Acme,a@acme.example,EUR,indie,111111111111,acme,\n").encode()
    with pytest.raises(PermissionDenied, match="import customers"):
        import_customers(session, data, actor=who)
    session.commit()
    assert session.exec(select(Customer)).all() == []
    assert session.exec(select(AuditEntry)).all() == []


def test_import_is_audited_with_the_admin(session: Session, plans: None) -> None:
    data = (HEADER + "Acme,a@acme.example,EUR,indie,111111111111,acme,\n").encode()
    import_customers(session, data, actor=ADMIN)
    session.commit()
    (entry,) = session.exec(select(AuditEntry)).all()
    assert (entry.actor, entry.action) == ("tester@example.com", "customer.import")
    assert entry.before is None and entry.after is not None
    assert entry.after["aws_account_ids"] == ["111111111111"]


def test_reimporting_unchanged_customers_writes_no_terms(session: Session, plans: None) -> None:
    data = (HEADER + "Acme,a@acme.example,EUR,indie,111111111111,acme,\n").encode()
    import_customers(session, data, actor=ADMIN)
    rows = len(session.exec(select(CustomerTerms)).all())
    again = import_customers(session, data, actor=ADMIN)
    assert again.unchanged == 1
    assert len(session.exec(select(CustomerTerms)).all()) == rows
