"""The dataplaneapi section: deadlines, caps, server_users, and the URL and TLS refusals
that keep the password away from servers that cannot prove who they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from announcer.cli import EX_CONFIG, EX_OK, main
from announcer.config import DataPlaneConfig
from announcer.configfile import parse_config
from announcer.errors import ConfigError


def doc(**dp: Any) -> dict[str, Any]:
    return {"allowed_prefixes": ["192.0.2.0/24"], "dataplaneapi": {"password_env": "PW", **dp}}


def problems(document: object) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(document)
    return e.value.problems


def test_defaults() -> None:
    dp = parse_config(doc()).dataplaneapi
    assert dp == DataPlaneConfig(password_env="PW")
    assert dp.timeout == 5.0 and dp.discovery_timeout == 30.0
    assert dp.max_response_bytes == 32 * 1024 * 1024
    assert dp.max_frontends == 20_000 and dp.max_binds == 100_000
    assert dp.server_users == ("root", "haproxy")


def test_new_keys_are_read() -> None:
    dp = parse_config(
        doc(
            discovery_timeout=12,
            max_response_bytes=1 << 20,
            max_frontends=50,
            max_binds=500,
            server_users=["haproxy", 998, "_dpapi"],
        )
    ).dataplaneapi
    assert dp.discovery_timeout == 12.0
    assert (dp.max_response_bytes, dp.max_frontends, dp.max_binds) == (1 << 20, 50, 500)
    assert dp.server_users == ("haproxy", 998, "_dpapi")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5555",
        "http://127.0.0.2:5555/",
        "http://[::1]:5555",
        "http://localhost:5555/v3",
        "https://lb1.example:5555",
        "https://192.0.2.5",
        "unix:///run/dataplaneapi.sock",
    ],
)
def test_accepted_urls(url: str) -> None:
    assert parse_config(doc(url=url)).dataplaneapi.url == url.rstrip("/")


@pytest.mark.parametrize(
    ("dp", "expected"),
    [
        ({"discovery_timeout": 0}, "dataplaneapi.discovery_timeout: 0 is out of range"),
        ({"max_response_bytes": 100}, "dataplaneapi.max_response_bytes: 100 is out of range"),
        ({"max_frontends": 0}, "dataplaneapi.max_frontends: 0 is out of range"),
        ({"max_binds": "many"}, "dataplaneapi.max_binds: expected an integer"),
        ({"server_users": "root"}, "dataplaneapi.server_users: expected a list"),
        ({"server_users": []}, "dataplaneapi.server_users: must name at least one"),
        ({"server_users": ["root", -1]}, "dataplaneapi.server_users[1]: -1 is not a uid"),
        ({"server_users": ["ro ot"]}, "dataplaneapi.server_users[0]: 'ro ot' is not a user"),
        (
            {"url": "http://192.0.2.1:5555"},
            "dataplaneapi.url: 'http://192.0.2.1:5555': plain http:// is only allowed to a "
            "loopback address",
        ),
        ({"url": "http://dpapi.example"}, "only allowed to a loopback address"),
        ({"url": "http://127.0.0.1:99999"}, "dataplaneapi.url: 'http://127.0.0.1:99999' is not"),
        ({"url": "http://[::1"}, "dataplaneapi.url: 'http://[::1' is not a valid URL"),
        ({"url": "http://127.0.0.1:port"}, "is not a valid URL"),
        ({"url": "unix://run/x.sock"}, "unix:///absolute/path"),
        ({"url": "unix:///run/x.sock/"}, "unix:///absolute/path"),
        ({"url": "http://127.0.0.1:5555/?a=b"}, "no ?query"),
        ({"url": "http://127.0.0.1 :5555"}, "whitespace"),
        (
            {"url": "https://lb1.example", "tls": {"verify": False}},
            "dataplaneapi.tls.verify: false would send the password to any server that "
            "answers; pin the server's CA with tls.ca_file instead",
        ),
        (
            {"url": "http://127.0.0.1:5555/v2", "api_version": 3},
            "dataplaneapi.api_version: 3 but url ends in /v2",
        ),
    ],
)
def test_refusals_name_the_key(dp: dict[str, Any], expected: str) -> None:
    found = problems(doc(**dp))
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:hunter2@127.0.0.1:5555",
        "https://admin:hunter2@lb1.example",
        "http://hunter2@127.0.0.1:5555",
        "http://admin:hunter2@[::1",
        "http://admin:hunter2@127.0.0.1:99999",
        "http://admin:hunter2@127.0.0.1:5555 /x",
    ],
)
def test_credentials_in_the_url_are_refused_and_never_echoed(url: str) -> None:
    found = problems(doc(url=url))
    assert any(p.startswith("dataplaneapi.url: ") for p in found), found
    assert not any("hunter2" in p for p in found), found


def test_tls_verify_false_is_harmless_without_https() -> None:
    # Only https has a certificate to verify; a loopback http URL is proven otherwise.
    assert parse_config(doc(tls={"verify": False})).dataplaneapi.tls_verify is False


def write(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "announcer.yaml"
    path.write_text(yaml.safe_dump(doc(url=url)))
    return path


def test_run_with_a_malformed_url_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "-c", str(write(tmp_path, "http://admin:hunter2@[::1"))]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "dataplaneapi.url" in err and "hunter2" not in err


def test_check_config_prints_the_url_without_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW", "secret-pw")
    assert main(["check-config", "-c", str(write(tmp_path, "unix:///run/dpapi.sock"))]) == EX_OK
    out = capsys.readouterr().out
    assert "DataPlaneAPI unix:///run/dpapi.sock" in out
    assert main(["check-config", "-c", str(write(tmp_path, "http://u:hunter2@127.0.0.1"))]) == (
        EX_CONFIG
    )
    captured = capsys.readouterr()
    assert "hunter2" not in captured.out + captured.err
    assert "secret-pw" not in captured.out + captured.err
