"""CheckSpec's hash, worked out once per spec (model.py): it must stay the hash of
exactly the fields that make two specs equal."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from announcer.model import CheckSpec

BASE = CheckSpec(kind="http", address=ipaddress.ip_address("2001:db8::1"), port=80, path="/hz")

OTHER: dict[str, Any] = {
    "kind": "tcp",
    "address": ipaddress.ip_address("2001:db8::2"),
    "port": 81,
    "timeout": 2.0,
    "path": "/other",
    "host": "example.org",
    "expect_status": (200, 204),
    "tls": True,
    "tls_verify": True,
    "command": "true",
    "shell": True,
}


def test_equal_specs_hash_alike_and_every_field_counts() -> None:
    compared = {f.name for f in dataclasses.fields(CheckSpec) if f.compare}
    assert set(OTHER) == compared  # a new field must be added here too
    again = CheckSpec(kind="http", address=ipaddress.ip_address("2001:db8::1"), port=80, path="/hz")
    assert again == BASE and hash(again) == hash(BASE) and again is not BASE
    for name, value in OTHER.items():
        changed = dataclasses.replace(BASE, **{name: value})
        assert changed != BASE and hash(changed) != hash(BASE), name
        back = dataclasses.replace(changed, **{name: getattr(BASE, name)})
        assert back == BASE and hash(back) == hash(BASE), name


def test_specs_work_as_keys() -> None:
    table = {BASE: 1}
    twin = dataclasses.replace(BASE)
    assert table[twin] == 1 and twin in {BASE}
    assert "_hash" not in repr(BASE)
