import pytest

from billing_core.auth import (
    ANONYMOUS,
    LOCAL_ADMIN,
    Identity,
    SignIn,
    cli_identity,
    identify,
    is_loopback,
    oidc_problems,
    oidc_providers,
    require,
    role_for,
    sign_in_mode,
)
from billing_core.config import Settings, load_settings
from billing_core.errors import ConfigError, PermissionDenied


def settings(**env: str) -> Settings:
    return load_settings(environ={"BILLING_SECRETS_FILE": "/nonexistent/secrets.toml", **env})


ROLES = settings(
    ADMIN_EMAILS="boss@acme.example, @ops.acme.example",
    VIEWER_EMAILS="@acme.example,auditor@outside.example",
)


@pytest.mark.parametrize(
    ("email", "role"),
    [
        ("boss@acme.example", "admin"),
        ("  BOSS@Acme.Example ", "admin"),
        ("anyone@ops.acme.example", "admin"),
        ("finance@acme.example", "viewer"),
        ("auditor@outside.example", "viewer"),
        ("boss@acme.example.evil.example", None),  # a domain entry is the whole domain
        ("x@sub.acme.example", None),  # subdomains are not included
        ("acme.example", None),
        ("stranger@elsewhere.example", None),
        ("", None),
        (None, None),
        # Bent addresses that used to read as the text after the last @ (issue 14, item 2).
        ("user@outside.example,admin@boss.example", None),
        ("user@outside.example@acme.example", None),
        ("user@outside.example, boss@acme.example", None),
        ("Boss <boss@acme.example>", None),
        ('"boss@acme.example"@outside.example', None),
        ("boss@[127.0.0.1]", None),
        ("stranger@outside.example\r\nX: boss@acme.example", None),
    ],
)
def test_role_for(email: str | None, role: str | None) -> None:
    assert role_for(email, ROLES) == role


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("billing.example.com", False),
        ("", False),
        (None, False),  # Streamlit's default: every interface
    ],
)
def test_is_loopback(address: str | None, loopback: bool) -> None:
    assert is_loopback(address) is loopback


PROXY = settings(AUTH_PROXY_HEADER="X-Forwarded-Email", ADMIN_EMAILS="boss@acme.example")


@pytest.mark.parametrize(
    ("cfg", "oidc", "address", "expected"),
    [
        (ROLES, False, "localhost", SignIn(oidc=False)),  # local use
        (ROLES, True, "0.0.0.0", SignIn(oidc=True)),
        (ROLES, True, "localhost", SignIn(oidc=True)),
        (PROXY, False, "127.0.0.1", SignIn(oidc=False, proxy_header="X-Forwarded-Email")),
        (PROXY, True, "localhost", SignIn(oidc=True, proxy_header="X-Forwarded-Email")),
        # Reachable from outside: the header could be forged, OIDC alone decides.
        (PROXY, True, "0.0.0.0", SignIn(oidc=True)),
    ],
)
def test_sign_in_mode(cfg: Settings, oidc: bool, address: str, expected: SignIn) -> None:
    assert sign_in_mode(cfg, oidc_configured=oidc, server_address=address) == expected


@pytest.mark.parametrize(
    ("cfg", "address", "message"),
    [
        (ROLES, "0.0.0.0", "No sign-in is configured and the server listens on 0.0.0.0"),
        (ROLES, None, "listens on every interface"),
        (PROXY, "0.0.0.0", "AUTH_PROXY_HEADER is set but the server listens on 0.0.0.0"),
    ],
)
def test_sign_in_mode_refuses_exposed_servers(
    cfg: Settings, address: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        sign_in_mode(cfg, oidc_configured=False, server_address=address)
    assert "localhost" in str(err.value)  # says what to do


OIDC = SignIn(oidc=True)
PROXIED = SignIn(oidc=False, proxy_header="X-Forwarded-Email")
BOTH = SignIn(oidc=True, proxy_header="X-Forwarded-Email")


@pytest.mark.parametrize(
    ("sign_in", "proxy_values", "user", "expected"),
    [
        (SignIn(oidc=False), [], None, LOCAL_ADMIN),
        (OIDC, [], None, ANONYMOUS),
        (OIDC, [], {"is_logged_in": False}, ANONYMOUS),
        # AppTest's default user has an email but no is_logged_in: not signed in.
        (OIDC, [], {"email": "boss@acme.example"}, ANONYMOUS),
        (
            OIDC,
            [],
            {"is_logged_in": True, "email": "Boss@Acme.example"},
            Identity("boss@acme.example", "admin", "oidc"),
        ),
        (
            OIDC,
            [],
            {"is_logged_in": True, "email": "finance@acme.example"},
            Identity("finance@acme.example", "viewer", "oidc"),
        ),
        (
            OIDC,
            [],
            {"is_logged_in": True, "email": "who@else.example"},
            Identity("who@else.example", None, "oidc"),
        ),
        (OIDC, [], {"is_logged_in": True}, Identity(None, None, "oidc")),
        (
            OIDC,
            [],
            {"is_logged_in": True, "email": "boss@acme.example", "email_verified": False},
            Identity("boss@acme.example", None, "oidc"),
        ),
        (OIDC, ["boss@acme.example"], None, ANONYMOUS),  # header ignored without proxy mode
        (PROXIED, [" Boss@acme.example "], None, Identity("boss@acme.example", "admin", "proxy")),
        (
            PROXIED,
            ["finance@acme.example"],
            None,
            Identity("finance@acme.example", "viewer", "proxy"),
        ),
        (PROXIED, [""], None, ANONYMOUS),
        (PROXIED, [], {"is_logged_in": True, "email": "boss@acme.example"}, ANONYMOUS),
        (
            BOTH,
            [],
            {"is_logged_in": True, "email": "finance@acme.example"},
            Identity("finance@acme.example", "viewer", "oidc"),
        ),
    ],
)
def test_identify(
    sign_in: SignIn, proxy_values: list[str], user: dict[str, object] | None, expected: Identity
) -> None:
    assert identify(ROLES, sign_in, proxy_values=proxy_values, oidc_user=user) == expected


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        # The browser's value first, then the proxy's: the first used to win.
        (["boss@acme.example", "stranger@outside.example"], "arrived 2 times"),
        (["", "finance@acme.example"], "arrived 2 times"),
        # An appending proxy that joins both into one line.
        (["boss@acme.example, stranger@outside.example"], "exactly one well-formed"),
        (["user@outside.example,admin@boss.example"], "exactly one well-formed"),
        (["user@outside.example@acme.example"], "exactly one well-formed"),
        (["not an address"], "exactly one well-formed"),
    ],
)
def test_a_bent_proxy_header_is_refused(values: list[str], reason: str) -> None:
    with pytest.raises(PermissionDenied, match=reason) as refused:
        identify(ROLES, PROXIED, proxy_values=values)
    assert "X-Forwarded-Email" in str(refused.value)
    assert "README, Sign-in" in str(refused.value)


def test_unknown_and_anonymous_can_do_nothing() -> None:
    unknown = Identity("who@else.example", None, "oidc")
    for who in (ANONYMOUS, unknown):
        assert not who.can("viewer") and not who.can("admin")
    assert ANONYMOUS.is_anonymous and not unknown.is_anonymous
    viewer = Identity("finance@acme.example", "viewer", "oidc")
    assert viewer.can("viewer") and not viewer.can("admin")
    assert LOCAL_ADMIN.can("admin") and cli_identity().can("admin")
    assert cli_identity("cron").actor == "cron"
    assert ANONYMOUS.actor == "anonymous"


@pytest.mark.parametrize(
    "who",
    [
        ANONYMOUS,
        Identity("who@else.example", None, "oidc"),
        Identity("finance@acme.example", "viewer", "oidc"),
    ],
)
def test_require_refuses_with_a_sentence(who: Identity) -> None:
    with pytest.raises(PermissionDenied, match="may not run invoices: the admin role"):
        require(who, "admin", "run invoices")
    require(Identity("boss@acme.example", "admin", "oidc"), "admin", "run invoices")


COMPLETE = {
    "redirect_uri": "https://billing.example.com/oauth2callback",
    "cookie_secret": "s" * 32,
    "client_id": "id",
    "client_secret": "secret",
    "server_metadata_url": "https://idp.example.com/.well-known/openid-configuration",
}


def test_oidc_sections() -> None:
    assert oidc_providers(COMPLETE) == ["default"]
    assert oidc_problems(COMPLETE) == []
    named = {
        "redirect_uri": "x",
        "cookie_secret": "y",
        "google": {k: COMPLETE[k] for k in ("client_id", "client_secret", "server_metadata_url")},
        "okta": {"client_id": "a"},
    }
    assert oidc_providers(named) == ["google", "okta"]
    assert oidc_problems(named) == [
        "[auth.okta] lacks client_secret",
        "[auth.okta] lacks server_metadata_url",
    ]
    assert oidc_problems({"client_id": "x"}) == [
        "[auth] lacks redirect_uri",
        "[auth] lacks cookie_secret",
        "[auth] lacks client_secret",
        "[auth] lacks server_metadata_url",
    ]
    assert (
        "[auth] names no provider" in oidc_problems({"redirect_uri": "x", "cookie_secret": "y"})[0]
    )
