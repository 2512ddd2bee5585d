"""Generated bad configurations: every option of the example config, broken in every
way its type allows, is rejected with a problem naming its key path, and nothing
but ConfigError ever escapes (plain and through `announcer check-config`).

The cases are generated from etc/announcer.yaml itself, so an option added there is
covered without touching this file. test_config.py has the hand-written cases (each
message word for word); this file is about breadth and about never crashing.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from announcer import cli
from announcer.configfile import load_config, parse_config
from announcer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "announcer.yaml"
# The example with its commented-out options switched on too (values from its
# comments), so that they are covered as well.
BASE: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
BASE["dataplaneapi"]["tls"]["ca_file"] = "/etc/announcer/dataplaneapi-ca.pem"
BASE["health"].update(path="/healthz", host="www.example.com")
BASE["bgp"].update(med=100, local_pref=100)
BASE["bgp"]["down"].update(med=1000, communities=["65512:666"])
BASE["bgp"]["draining"] = {"med": 1000, "as_path_prepend": 3}
BASE["bgp"]["drained"]["med"] = 2000
BASE["overrides"] = [
    {
        "frontends": ["fe_api*"],
        "health": {"path": "/ready", "interval": 0.5, "rise": 2, "fall": 2, "timeout": 0.4},
        "bgp": {"communities": ["65512:200"], "med": 50},
    },
    {"vips": ["192.0.2.10", "2001:db8:0:1::/64"], "health": {"type": "tcp"}},
    {"frontends": ["fe_cmd"], "health": {"type": "command", "command": "curl -f http://%s/"}},
]

Path_ = tuple[str | int, ...]


def leaves(doc: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """(path, value) of every option: mappings and lists of mappings are walked,
    anything else is a leaf."""
    if isinstance(doc, dict):
        if path:
            yield path, doc  # a section is an option too (it must be a mapping)
        for k, v in doc.items():
            yield from leaves(v, (*path, k))
    elif isinstance(doc, list) and doc and all(isinstance(x, dict) for x in doc):
        yield path, doc
        for i, x in enumerate(doc):
            yield from leaves(x, (*path, i))
    else:
        yield path, doc


def dotted(path: Path_) -> str:
    """`a.b[1].c` as config.py names keys."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def with_value(path: Path_, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    node: Any = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


def bad_values(example: Any) -> list[tuple[str, Any]]:
    """Values that an option shaped like `example` must refuse, with a label."""
    wrong_shape = [("mapping", {"x": 1}), ("nested list", [[1]])]
    if isinstance(example, bool):
        return [("string", "yes"), ("integer", 1), *wrong_shape]
    if isinstance(example, int | float):
        return [
            ("string", "fast"),
            ("boolean", True),
            ("huge", 10**12),
            ("negative", -(10**12)),
            ("nan", math.nan),
            *wrong_shape,
        ]
    if isinstance(example, str):
        return [("integer", 12345), ("empty", ""), ("boolean", False), *wrong_shape]
    if isinstance(example, list):
        return [("string", "not a list"), ("list of mappings", [{"x": 1}]), ("mapping", {"x": 1})]
    if isinstance(example, dict) or example is None:  # a section (None: written empty)
        return [("string", "not a section"), ("list", [1]), ("unknown key", {"no_such_key": 1})]
    raise AssertionError(f"unexpected example value {example!r}")


# (option, label) pairs an option accepts on purpose; none so far.
ACCEPTED: set[tuple[str, str]] = set()

CASES = [
    pytest.param(path, value, id=f"{dotted(path)}={label}")
    for path, example in leaves(BASE)
    for label, value in bad_values(example)
    if (dotted(path), label) not in ACCEPTED
]


def names_key(problem: str, key: str) -> bool:
    return problem.startswith((f"{key}:", f"{key}.", f"{key}["))


def test_the_example_is_valid_and_there_are_dozens_of_cases() -> None:
    parse_config(BASE)
    assert len(CASES) >= 100, len(CASES)


@pytest.mark.parametrize(("path", "value"), CASES)
def test_generated_bad_config_is_rejected_naming_the_key(path: Path_, value: Any) -> None:
    key = dotted(path)
    with pytest.raises(ConfigError) as info:
        parse_config(with_value(path, value))
    problems = info.value.problems
    assert problems and all(isinstance(p, str) and p for p in problems)
    assert any(names_key(p, key) for p in problems), (key, value, problems)


@pytest.mark.parametrize(("path", "value"), CASES[::7])  # a sample: each one is a file
def test_check_config_exits_78_naming_the_key(
    path: Path_, value: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "announcer.yaml"
    cfg.write_text(yaml.safe_dump(with_value(path, value)))
    assert cli.main(["check-config", "-c", str(cfg)]) == cli.EX_CONFIG
    err = capsys.readouterr().err
    assert f"  {dotted(path)}" in err, err
    assert "Traceback" not in err


def test_every_top_level_section_can_be_left_out_unless_required() -> None:
    for key in BASE:
        doc = copy.deepcopy(BASE)
        del doc[key]
        try:
            parse_config(doc)
        except ConfigError as e:  # only a required option may be missing
            assert all(names_key(p, key) or ": required" in p for p in e.problems), e.problems


# ------------------------------------------------------------------ property tests

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_PATHS = [path for path, _ in leaves(BASE)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_PATHS), _json)
def test_any_value_anywhere_gives_config_or_config_error(path: Path_, value: Any) -> None:
    try:
        parse_config(with_value(path, value))
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_mangled_yaml_text_gives_config_or_config_error(
    tmp_path: Path, data: st.DataObject
) -> None:
    """The example file with characters deleted, duplicated or replaced at random."""
    text = EXAMPLE.read_text()
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(text) - 1))
        op = data.draw(st.sampled_from(["delete", "duplicate", "replace"]))
        if op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "duplicate":
            text = text[:i] + text[i] + text[i:]
        else:
            text = (
                text[:i]
                + data.draw(st.sampled_from(list(":-[]{}#&*!|>'\"%@` \t\n\x00")))
                + text[i + 1 :]
            )
    cfg = tmp_path / "mangled.yaml"
    cfg.write_text(text)
    try:
        load_config(cfg)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_config_error(raw: bytes) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".yaml") as f:
        f.write(raw)
        f.flush()
        try:
            load_config(f.name)
        except ConfigError as e:
            assert e.problems
