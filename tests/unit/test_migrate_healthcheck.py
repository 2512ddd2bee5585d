"""The healthcheck command line (announcer/migrate_healthcheck.py): ExaBGP's options and
the seed's variant, and which `--cmd` curls become a native HTTP check."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.migrate_exabgp import MigrateError, read_config
from announcer.migrate_healthcheck import (
    _OPTIONS,
    HttpCheck,
    curl_check,
    parse_healthcheck,
)

# The seed's `run` line, as the grammar reads it (test_migrate_exabgp.py checks it word by word).
SEED_ARGV = (
    read_config(
        (Path(__file__).resolve().parents[1] / "fixtures/exabgp-seed/exabgp.conf").read_text()
    )
    .processes["watch-haproxy"]
    .argv
)


def test_the_seeds_variant() -> None:
    hc = parse_healthcheck(SEED_ARGV)
    assert hc.program == "/usr/local/sbin/healthcheck-haproxy.py"
    assert hc.variant and hc.placeholder_password
    assert hc.get("api-password") == "<set a password>"
    assert hc.get("command") == "curl --fail --verbose --max-time 2 http://%s/_healthcheck"
    # Defaults of healthcheck.py for what is not given.
    assert (hc.get("interval"), hc.get("fast-interval"), hc.get("timeout")) == ("5", "1", "5")
    assert (hc.get("rise"), hc.get("fall"), hc.get("up-metric")) == ("3", "3", "100")
    assert (hc.get("down-metric"), hc.get("disabled-metric")) == ("1000", "500")
    assert hc.given == (
        ("silent", None),
        ("api-password", None),  # never kept where a report could show it
        ("command", "curl --fail --verbose --max-time 2 http://%s/_healthcheck"),
    )


def test_a_script_of_another_name_is_known_by_its_options() -> None:
    hc = parse_healthcheck(("/usr/bin/python3", "/opt/check-vips.py", "--cmd", "true"))
    assert hc.program == "/opt/check-vips.py" and not hc.by_name
    with pytest.raises(MigrateError, match="'--frobnicate': unknown"):
        parse_healthcheck(("/opt/check-vips.py", "--cmd", "true", "--frobnicate"))


@pytest.mark.parametrize(
    ("argv", "program"),
    [
        (("exabgp-healthcheck",), "exabgp-healthcheck"),
        (("/usr/bin/exabgp-healthcheck", "--rise", "2"), "/usr/bin/exabgp-healthcheck"),
        (("python", "-m", "exabgp", "healthcheck"), "python -m exabgp healthcheck"),
        (
            ("python3", "-m", "exabgp.application.healthcheck"),
            "python -m exabgp.application.healthcheck",
        ),
        (("/usr/bin/python3", "/etc/exabgp/healthcheck.py"), "/etc/exabgp/healthcheck.py"),
    ],
)
def test_the_program_forms(argv: tuple[str, ...], program: str) -> None:
    assert parse_healthcheck(argv).program == program


@pytest.mark.parametrize(
    "argv",
    [
        ("/usr/bin/sudo", "exabgp-healthcheck"),
        ("/bin/cat",),
        ("python3", "/opt/announce.py"),
        ("/opt/announce.py", "--rise", "2"),  # another name and no check or VIP option
        (),
    ],
)
def test_not_a_healthcheck(argv: tuple[str, ...]) -> None:
    with pytest.raises(MigrateError):
        parse_healthcheck(argv)


def test_forms_of_options() -> None:
    hc = parse_healthcheck(
        (
            "exabgp-healthcheck",
            "-i",
            "2",
            "--fast-interval=0.5",
            "-t",
            "1",
            "-c",
            "true",
            "-N",
            "192.0.2.254",
            "--ip",
            "192.0.2.10",
            "--ip=192.0.2.11/32",
            "--rise",
            "2",
            "--rise",
            "4",
            "--withdraw-on-down",
            "--api-password",
            "real secret",
        )
    )
    assert hc.get("interval") == "2" and hc.get("fast-interval") == "0.5"
    assert hc.get("timeout") == "1" and hc.get("command") == "true"
    assert hc.get("next-hop") == "192.0.2.254"
    assert hc.all("ip") == ["192.0.2.10", "192.0.2.11/32"]
    assert hc.get("rise") == "4"  # as argparse: the last one wins
    assert hc.has("withdraw-on-down") and not hc.has("disable")
    assert hc.get("api-password") == "real secret" and not hc.placeholder_password
    assert "real secret" not in repr(hc.given)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--bogus",), "healthcheck option '--bogus': unknown"),
        (("--ris", "2"), "healthcheck option '--ris': unknown"),  # no abbreviations
        (("--rise",), "healthcheck option --rise needs a value"),
        (("--rise", "two"), "healthcheck option --rise 'two': not a number"),
        (("--interval", "x"), "healthcheck option --interval 'x': not a number"),
        (("--sudo=yes",), "healthcheck option --sudo takes no value"),
        (("192.0.2.1",), "healthcheck option '192.0.2.1': unknown"),
    ],
)
def test_bad_options(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(MigrateError) as e:
        parse_healthcheck(("exabgp-healthcheck", *argv))
    assert e.value.problems == [message]


def test_every_option_is_read() -> None:
    for name, (aliases, takes, _) in _OPTIONS.items():
        value = ("7",) if takes else ()
        for form in (f"--{name}", *aliases):
            hc = parse_healthcheck(("exabgp-healthcheck", form, *value))
            assert hc.has(name), form


@pytest.mark.parametrize(
    ("cmd", "want"),
    [
        (
            "curl --fail --verbose --max-time 2 http://%s/_healthcheck",
            HttpCheck("/_healthcheck", None, 2.0),
        ),
        ("curl -sf http://%s/", HttpCheck("/", None, None)),
        (
            "/usr/bin/curl -fsS -o /dev/null -m 1.5 http://%s:8080/health",
            HttpCheck("/health", 8080, 1.5),
        ),
        ("curl --fail --connect-timeout 1 http://[%s]/x", HttpCheck("/x", None, None)),
        ("curl -f http://%s", HttpCheck("/", None, None)),
    ],
)
def test_curl_commands_that_are_http_checks(cmd: str, want: HttpCheck) -> None:
    assert curl_check(cmd) == want


@pytest.mark.parametrize(
    "cmd",
    [
        "curl http://%s/_healthcheck",  # no --fail: a 503 passed, only the connect was tested
        "curl --fail https://%s/",
        "curl --fail -H 'Host: x' http://%s/",
        "curl --fail http://127.0.0.1/_healthcheck",
        "curl --fail http://%s/?a=b",
        "curl --fail -k http://%s/",
        "curl --fail http://%s/ http://%s/again",
        "wget -q http://%s/",
        "curl --fail --max-time x http://%s/",
        "curl --fail 'http://%s/",
        "",
        "curl --fail http://%s:99999/",
    ],
)
def test_curl_commands_that_stay_commands(cmd: str) -> None:
    assert curl_check(cmd) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["curl", "-f", "-s", "--fail", "-m", "2", "http://%s/", "-o",
                                 "/dev/null", "'", "x", "--max-time", "http://[%s]:80/a"]),
                max_size=8))  # fmt: skip
def test_curl_check_never_raises(words: list[str]) -> None:
    got = curl_check(" ".join(words))
    if got is not None:
        assert "--fail" in words or "-f" in words
