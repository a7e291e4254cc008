import re
from pathlib import Path

import pytest

from billing_core.config import Settings, load_settings
from billing_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_demo_mode(tmp_path: Path) -> None:
    s = load_settings({}, tmp_path / "missing.toml")
    assert s.mode == "demo"
    # The demo world has a file of its own; live books default to another (issue 13, item 2).
    assert s.database_url == "sqlite:///data/demo.db"
    live = load_settings({"BILLING_MODE": "live"}, tmp_path / "missing.toml")
    assert live.database_url == "sqlite:///data/billing.db"
    chosen = load_settings({"DATABASE_URL": "sqlite:///x.db"}, tmp_path / "missing.toml")
    assert chosen.database_url == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STRIPE_API_KEY": "sk_live_abc"}, "live key"),
        ({"STRIPE_API_KEY": "rk_live_abc", "STRIPE_API_BASE": "http://127.0.0.1:1"}, "live key"),
        ({"STRIPE_API_KEY": "sk_test_abc"}, "local Stripe test server"),
        (
            {"STRIPE_API_KEY": "sk_test_abc", "STRIPE_API_BASE": "https://api.stripe.com"},
            "local Stripe test server",
        ),
    ],
)
def test_demo_mode_never_talks_to_a_real_stripe_account(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"BILLING_MODE": "demo", **env}, tmp_path / "missing.toml")
    local = {"STRIPE_API_KEY": "sk_test_abc", "STRIPE_API_BASE": "http://127.0.0.1:12111"}
    assert load_settings({"BILLING_MODE": "demo", **local}, tmp_path / "missing.toml").mode == (
        "demo"
    )


def test_environment_overrides_secrets_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        'STRIPE_API_KEY = "sk_test_file"\ndatabase_url = "sqlite:///file.db"\n'
        'admin_emails = ["Boss@Example.com"]\n[auth]\nredirect_uri = "x"\n'
    )
    s = load_settings({"DATABASE_URL": "sqlite:///env.db"}, secrets)
    assert s.database_url == "sqlite:///env.db"
    assert s.stripe_api_key is not None
    assert s.stripe_api_key.get_secret_value() == "sk_test_file"
    assert s.admin_emails == ["boss@example.com"]
    assert s.mode == "live"


def test_mode_forced_and_aws_detected(tmp_path: Path) -> None:
    none = tmp_path / "none.toml"
    assert load_settings({"AWS_PROFILE": "billing"}, none).mode == "live"
    assert load_settings({"AWS_PROFILE": "billing", "BILLING_MODE": "demo"}, none).mode == "demo"


def test_secrets_never_in_repr_or_summary(tmp_path: Path) -> None:
    s = load_settings(
        {
            "STRIPE_API_KEY": "sk_test_verysecret",
            "DATABASE_URL": "postgresql+psycopg://u:hunter2@db/billing",
        },
        tmp_path / "none.toml",
    )
    text = repr(s) + str(s.safe_summary())
    assert "verysecret" not in text
    assert "hunter2" not in text
    assert s.safe_summary()["stripe_api_key"] == "set"


def test_malformed_secrets_file_is_one_clear_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "secrets.toml"
    bad.write_text("STRIPE_API_KEY = 'unterminated\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, bad)


def test_invalid_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="STRIPE_CONCURRENCY"):
        load_settings({"STRIPE_CONCURRENCY": "many"}, tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings({"STRIPE_API_KEY": "sk_xxx_replace_me"}, tmp_path / "none.toml")


def test_every_setting_is_documented_in_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        name.upper()
        for name in Settings.model_fields
        if not re.search(rf"`{name.upper()}`", readme)
    ]
    assert missing == [], f"README lacks these settings: {missing}"


def test_example_secrets_file_parses_and_real_one_is_ignored() -> None:
    example = ROOT / ".streamlit/secrets.toml.example"
    s = load_settings({}, example)
    assert s.database_url
    assert ".streamlit/secrets.toml" in (ROOT / ".gitignore").read_text()
