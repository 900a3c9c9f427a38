"""Bad APP_* settings stop the app at start with a message naming the variable."""

from __future__ import annotations

import pytest
import trustme

from notes import create_app
from notes.config import ConfigError, Settings


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "key").write_text("k" * 32)
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return {
        "APP_DB_PASSWORD_FILE": str(tmp_path / "pw"),
        "APP_SECRET_KEY_FILE": str(tmp_path / "key"),
        "APP_DB_CA_FILE": str(tmp_path / "ca.pem"),
    }


def test_defaults_are_the_lab(env):
    settings = Settings.from_env(env)
    assert settings.db_target == "10.0.2.10:3306"
    assert (settings.db_user, settings.db_name, settings.db_tls) == ("app", "notes", True)
    assert settings.db_password == "secret", "the trailing newline of the file is dropped"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"APP_DB_PASSWORD_FILE": None}, "APP_DB_PASSWORD_FILE is not set"),
        ({"APP_DB_PASSWORD_FILE": "/nonexistent/pw"}, "APP_DB_PASSWORD_FILE=/nonexistent/pw"),
        ({"APP_SECRET_KEY_FILE": None}, "APP_SECRET_KEY_FILE is not set"),
        ({"APP_DB_CA_FILE": None}, "APP_DB_CA_FILE is not set"),
        ({"APP_DB_CA_FILE": "/nonexistent/ca.pem"}, "APP_DB_CA_FILE=/nonexistent/ca.pem"),
        ({"APP_DB_PORT": "33o6"}, "APP_DB_PORT='33o6': expected a TCP port number"),
        ({"APP_DB_PORT": "70000"}, "APP_DB_PORT='70000'"),
        ({"APP_DB_TLS": "maybe"}, "APP_DB_TLS='maybe': expected on or off"),
    ],
)
def test_bad_setting_names_the_variable(env, change, message):
    for name, value in change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_ca_file_without_a_certificate_is_refused(env, tmp_path):
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="APP_DB_CA_FILE=.*: no PEM certificate in it"):
        Settings.from_env(env)


def test_empty_secret_file_is_refused(env, tmp_path):
    (tmp_path / "pw").write_text("\n")
    with pytest.raises(ConfigError, match="APP_DB_PASSWORD_FILE=.*: the file is empty"):
        Settings.from_env(env)


def test_password_that_is_not_utf8_is_refused(env, tmp_path):
    (tmp_path / "pw").write_bytes(b"caf\xe9\n")
    with pytest.raises(ConfigError, match="APP_DB_PASSWORD_FILE=.*: not UTF-8 text"):
        Settings.from_env(env)


def test_tls_off_needs_no_ca(env):
    env.pop("APP_DB_CA_FILE")
    env["APP_DB_TLS"] = "off"
    assert Settings.from_env(env).db_tls is False


def test_create_app_reads_the_environment(env, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("APP_DB_HOST", "127.0.0.1")
    app = create_app()
    assert app.extensions["notes.db"].target == "127.0.0.1:3306"
