"""DataPlaneClient refuses a bad URL when it is built, before any connection.

Everything the client does on the wire is in tests/adapters/test_dataplane_client.py.
"""

from __future__ import annotations

import pytest

from announcer.dataplane import DataPlaneClient


def test_url_suffix_and_api_version_must_agree() -> None:
    with pytest.raises(ValueError, match="ends in /v2 but api_version is 3"):
        DataPlaneClient("http://127.0.0.1:5555/v2", username="u", password="p", api_version=3)


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:hunter2@127.0.0.1:1",
        "http://hunter2@127.0.0.1:1",
        "http://admin:hunter2@[::1",
        "https://admin:hunter2@lb.example:99999",
    ],
)
def test_credentials_in_url_are_refused(url: str) -> None:
    with pytest.raises(ValueError) as info:
        DataPlaneClient(url, username="u", password="p")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("http://192.0.2.1:5555", "only allowed to a loopback address"),
        ("http://dpapi.example:5555", "only allowed to a loopback address"),
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("http://[::1", "not a valid URL"),
        ("ftp://127.0.0.1", "expected http://"),
        ("unix://relative.sock", "unix:///absolute/path"),
        ("http://127.0.0.1:5555/?x=1", "no ?query"),
    ],
)
def test_bad_urls_are_refused(url: str, text: str) -> None:
    with pytest.raises(ValueError, match=text.replace("?", r"\?")):
        DataPlaneClient(url, username="u", password="p")


def test_https_without_verification_is_refused() -> None:
    with pytest.raises(ValueError, match="any server"):
        DataPlaneClient("https://127.0.0.1:5555", username="u", password="p", verify=False)
