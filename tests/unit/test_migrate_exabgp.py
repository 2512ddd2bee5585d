"""The ExaBGP configuration grammar (announcer/migrate_exabgp.py): the seed's config, every
construct, error positions, unknown directives, and a fuzz that nothing but MigrateError
escapes and every token's position points at its text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.migrate_exabgp import MigrateError, Pos, read_config, tokenize

SEED_TEXT = (Path(__file__).resolve().parents[1] / "fixtures/exabgp-seed/exabgp.conf").read_text()


def test_the_seed_config() -> None:
    cfg = read_config(SEED_TEXT)
    assert list(cfg.processes) == ["watch-haproxy"]
    p = cfg.processes["watch-haproxy"]
    assert p.argv == (
        "/usr/bin/python3",
        "/usr/local/sbin/healthcheck-haproxy.py",
        "-s",
        "--api-password",
        "<set",
        "a",
        "password>",
        "--cmd",
        "curl --fail --verbose --max-time 2 http://%s/_healthcheck",
    )
    assert p.encoder == "text" and p.pos == Pos(1, 1)
    assert [n.address for n in cfg.neighbors] == ["192.0.2.2", "192.0.2.3"]
    for nb, desc in zip(cfg.neighbors, ("r-1", "r-2"), strict=True):
        values = {k: v for k, (v, _) in nb.values.items()}
        assert values == {
            "router-id": "192.0.2.5",
            "local-address": "192.0.2.5",
            "local-as": "65512",
            "peer-as": "65530",
            "description": desc,
        }
        assert nb.families == ("ipv4-unicast",)
        assert nb.processes == ("watch-haproxy",)
        assert nb.inherits == ("core-bgp",)
    # Inherited values keep the template's position; own values their own.
    assert cfg.neighbors[0].values["local-as"][1] == Pos(9, 9)
    assert cfg.neighbors[1].values["description"][1] == Pos(26, 5)
    assert cfg.unmapped == ()


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_the_flattened_form_reads_the_same() -> None:
    # What configuration management writes: everything on one line, template expanded.
    flat = (
        "process watch-haproxy { run /usr/bin/python3 /usr/local/sbin/healthcheck-haproxy.py -s "
        '--api-password <set a password> --cmd "curl --fail --verbose --max-time 2 '
        'http://%s/_healthcheck"; encoder text; } '
        + " ".join(
            f"neighbor {addr} {{ router-id 192.0.2.5; local-address 192.0.2.5; local-as 65512; "
            f"peer-as 65530; family {{ ipv4 unicast; }} "
            f'api services {{ processes [ watch-haproxy ]; }} description "{d}"; }}'
            for addr, d in (("192.0.2.2", "r-1"), ("192.0.2.3", "r-2"))
        )
    )
    a, b = read_config(SEED_TEXT), read_config(flat)
    assert a.processes["watch-haproxy"].argv == b.processes["watch-haproxy"].argv
    for x, y in zip(a.neighbors, b.neighbors, strict=True):
        assert {k: v for k, (v, _) in x.values.items()} == {k: v for k, (v, _) in y.values.items()}
        assert (x.families, x.processes) == (y.families, y.processes)
    # And the seed with its line breaks turned into spaces, too.
    one_line = read_config(_strip_comments(SEED_TEXT).replace("\n", " "))
    assert [n.address for n in one_line.neighbors] == ["192.0.2.2", "192.0.2.3"]


def test_comments_quotes_lists_several_neighbors_and_processes() -> None:
    text = """
    # a comment { with braces; and ; }
    process a { run /usr/bin/exabgp-healthcheck --cmd 'echo "#not a comment;"'; }  # trailing
    process b { run /usr/bin/exabgp-healthcheck --cmd "x;y"; encoder json; respawn; }
    template {
        neighbor base { local-as 65512; peer-as 65530; hold-time 9;
                        family { ipv4 unicast; ipv6 unicast; } api { processes [ a, b ]; } }
        neighbor other { peer-as 65000; md5-password "s3 cr;et"; }
    }
    neighbor 198.51.100.1 { inherit base; }
    neighbor 2001:db8::1 { inherit base other; family { ipv6 unicast; } description 'six'; }
    neighbor 198.51.100.2 { inherit base; peer-as 65531; passive; capability { route-refresh; } }
    """
    cfg = read_config(text)
    assert cfg.processes["a"].argv[-1] == 'echo "#not a comment;"'
    assert cfg.processes["b"].argv[-1] == "x;y" and cfg.processes["b"].encoder == "json"
    one, six, two = cfg.neighbors
    assert one.families == ("ipv4-unicast", "ipv6-unicast")
    assert one.processes == ("a", "b")
    assert one.values["hold-time"][0] == "9"
    # Later layers win: `other` over `base`, the neighbor's own over both.
    assert six.values["peer-as"][0] == "65000"
    assert six.values["md5-password"][0] == "s3 cr;et"
    assert six.families == ("ipv6-unicast",)  # its own family block replaces the inherited one
    assert six.values["description"][0] == "six"
    assert two.values["peer-as"][0] == "65531"
    # Known directives without a counterpart are kept for the report, with positions.
    assert [(u.where, u.directive) for u in cfg.unmapped] == [
        ("process b", "respawn"),
        ("neighbor 198.51.100.2", "passive"),
        ("neighbor 198.51.100.2", "capability"),
    ]
    assert cfg.unmapped[1].pos == Pos(12, 58)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'neighbor 192.0.2.1 {\n  description "r-1;\n}\n',
            'line 2 column 15: unterminated " string',
        ),
        ("neighbor 192.0.2.1 {\n  local-as 1\n}\n", "line 2 column 3: missing ';' before '}'"),
        ("neighbor 192.0.2.1 {\n  local-as 1;\n", "line 1 column 20: '{' is never closed"),
        ("neighbor 192.0.2.1 { local-as 1; }\n}\n", "line 2 column 1: '}' without a matching '{'"),
        (
            "neighbor 192.0.2.1 { local-as 1; } x",
            "line 1 column 36: missing ';' at the end of the statement",
        ),
        ("process p { run a [ b ; }", "line 1 column 23: ';' inside [ ]"),
        ("process p { run a ] ; }", "line 1 column 19: ']' without a matching '['"),
        ("{ x; }", "line 1 column 1: '{' without a name before it"),
        ("process p { run a [ b", "line 1 column 19: '[' is never closed"),
    ],
)
def test_syntax_errors_name_line_and_column(text: str, message: str) -> None:
    with pytest.raises(MigrateError) as e:
        read_config(text)
    assert e.value.problems == [message]


def test_unknown_directives_are_errors_with_positions_all_at_once() -> None:
    text = """process p {
    run /usr/bin/exabgp-healthcheck;
    runn x;
}
template { neighbor t { peer-as 1; } group g { } }
neighbor 192.0.2.1 {
    inherit t;
    inherit missing;
    local-as 65512;
    lokal-as 65512;
    family { ipv4 unicast; ipv4 bogus; }
    api { processes [ p q ]; frobnicate; }
}
neighbour 192.0.2.2 { }
neighbor r-1 { local-as 1; }
"""
    with pytest.raises(MigrateError) as e:
        read_config(text)
    assert e.value.problems == [
        "line 3 column 5: unknown directive 'runn' in process p",
        "line 5 column 38: unknown directive 'group g' in template",
        "line 10 column 5: unknown directive 'lokal-as' in neighbor 192.0.2.1",
        "line 12 column 30: unknown directive 'frobnicate' in the api of neighbor 192.0.2.1",
        "line 14 column 1: unknown directive 'neighbour 192.0.2.2'",
        "line 8 column 5: inherit 'missing': no such template",
        "line 15 column 1: neighbor 'r-1' is not an IP address",
        "line 6 column 1: neighbor 192.0.2.1: no process named 'q'",
    ]


def test_an_unknown_family_is_kept_for_the_report_not_dropped() -> None:
    cfg = read_config("neighbor 192.0.2.1 { local-as 1; peer-as 2; family { ipv4 flow; } }")
    assert [(u.directive, u.pos) for u in cfg.unmapped] == [("family ipv4 flow", Pos(1, 54))]


def test_values_take_exactly_one_word_and_processes_need_run() -> None:
    with pytest.raises(MigrateError) as e:
        read_config("process p { encoder text; }\nneighbor 192.0.2.1 { local-as 1 2; }")
    assert e.value.problems == [
        "line 1 column 1: process p has no run command",
        "line 2 column 22: local-as takes one value in neighbor 192.0.2.1",
    ]


def test_no_neighbor_is_an_error() -> None:
    with pytest.raises(MigrateError, match="no neighbor"):
        read_config("# nothing\n")


_WORD = st.from_regex(r"[A-Za-z0-9_./:%<>-]{1,8}", fullmatch=True)
_TOKEN = st.one_of(_WORD, st.sampled_from(["{", "}", ";", "[", "]"]))
_SPACE = st.sampled_from([" ", "  ", "\n", "\t", " # c\n", "\n\n "])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TOKEN, _SPACE), max_size=40))
def test_every_token_position_points_at_its_text(parts: list[tuple[str, str]]) -> None:
    text = "".join(tok + sp for tok, sp in parts)
    lines = text.split("\n")
    toks = tokenize(text)
    assert [t.text for t in toks] == [tok for tok, _ in parts]
    for t in toks:
        line = lines[t.pos.line - 1]
        assert line[t.pos.col - 1 :].startswith(t.text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab {};[]\"'#\n1.:-")), max_size=80))
def test_any_text_gives_a_config_or_a_migrate_error_with_a_position(text: str) -> None:
    try:
        read_config(text)
    except MigrateError as e:
        assert e.problems
        for p in e.problems:
            assert re.match(r"line \d+ column \d+: ", p) or p.startswith("no neighbor"), p
