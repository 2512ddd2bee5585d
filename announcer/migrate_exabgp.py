"""ExaBGP 4.x configuration grammar: text in, a typed `ExaConfig` out, or a `MigrateError`.

Pure: no I/O. Two layers. `tokenize` + `parse_tree` read the generic shape ExaBGP's
own reader accepts: words, `"..."`/`'...'` strings, `#` comments to the end of the
line, statements ended by `;`, blocks in `{ }`, lists in `[ ]`; line breaks mean
nothing, so the one-line "flattened" form configuration management writes parses the
same as the indented one. `read_config` then gives the tree its meaning: `process`,
`template { neighbor NAME { } }`, `neighbor ADDR { }` with `inherit` (template values
first, the neighbor's own over them, in order).

Every directive is one of three kinds, and none is dropped silently: *mapped* (its
value is kept), *known* (ExaBGP has it, announcer has no counterpart: it is kept as an
`Unmapped` note for the report), or *unknown* (a typo or something newer than this
reader: an error with its line and column, because a migration that did not understand
its input cannot claim to be equivalent).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .errors import ConfigError


class MigrateError(ConfigError):
    """The ExaBGP input is wrong or cannot be migrated; each problem names line and column."""


@dataclass(frozen=True)
class Pos:
    line: int
    col: int

    def __str__(self) -> str:
        return f"line {self.line} column {self.col}"


@dataclass(frozen=True)
class Token:
    text: str
    pos: Pos
    quoted: bool = False

    def is_punct(self, char: str) -> bool:
        return not self.quoted and self.text == char


_PUNCT = "{};[]"


def tokenize(text: str) -> list[Token]:
    """Split ExaBGP configuration text into tokens; raises MigrateError on an open quote."""
    out: list[Token] = []
    i, line, col = 0, 1, 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            i, line, col = i + 1, line + 1, 1
            continue
        if c.isspace():
            i, col = i + 1, col + 1
            continue
        start = Pos(line, col)
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in _PUNCT:
            out.append(Token(c, start))
            i, col = i + 1, col + 1
            continue
        if c in "\"'":
            end = text.find(c, i + 1)
            newline = text.find("\n", i + 1)
            if end < 0 or (0 <= newline < end):
                raise MigrateError(f"{start}: unterminated {c} string")
            out.append(Token(text[i + 1 : end], start, quoted=True))
            col += end + 1 - i
            i = end + 1
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] not in _PUNCT and text[j] not in "\"'#":
            j += 1
        out.append(Token(text[i:j], start))
        col += j - i
        i = j
    return out


@dataclass(frozen=True)
class Statement:
    """`words... ;` — a list `[ a b ]` among the words is one tuple of tokens."""

    words: tuple[Token | tuple[Token, ...], ...]
    pos: Pos


@dataclass(frozen=True)
class Block:
    """`words... { items }`."""

    words: tuple[Token, ...]
    items: tuple[Statement | Block, ...]
    pos: Pos


Item = Statement | Block


def parse_tree(tokens: list[Token]) -> tuple[Item, ...]:
    """The generic statement/block tree; raises MigrateError naming the position."""
    items, _ = _items(tokens, 0, None)
    return items


def _items(tokens: list[Token], i: int, opener: Token | None) -> tuple[tuple[Item, ...], int]:
    items: list[Item] = []
    words: list[Token | tuple[Token, ...]] = []
    while i < len(tokens):
        t = tokens[i]
        if t.is_punct("}"):
            if words:
                raise MigrateError(f"{_pos(words[0])}: missing ';' before '}}'")
            if opener is None:
                raise MigrateError(f"{t.pos}: '}}' without a matching '{{'")
            return tuple(items), i + 1
        if t.is_punct(";"):
            if words:
                items.append(Statement(tuple(words), _pos(words[0])))
                words = []
            i += 1
        elif t.is_punct("{"):
            if not words:
                raise MigrateError(f"{t.pos}: '{{' without a name before it")
            if any(isinstance(w, tuple) for w in words):
                raise MigrateError(f"{t.pos}: a block name cannot contain a list")
            inner, i = _items(tokens, i + 1, t)
            names = tuple(w for w in words if isinstance(w, Token))
            items.append(Block(names, inner, names[0].pos))
            words = []
        elif t.is_punct("["):
            j = i + 1
            while j < len(tokens) and not tokens[j].is_punct("]"):
                if tokens[j].text in _PUNCT and not tokens[j].quoted:
                    raise MigrateError(f"{tokens[j].pos}: {tokens[j].text!r} inside [ ]")
                j += 1
            if j == len(tokens):
                raise MigrateError(f"{t.pos}: '[' is never closed")
            # `[ a b ]`, also written `[ a, b ]`
            words.append(
                tuple(
                    Token(part, x.pos, x.quoted)
                    for x in tokens[i + 1 : j]
                    for part in (x.text.split(",") if not x.quoted else [x.text])
                    if part
                )
            )
            i = j + 1
        elif t.is_punct("]"):
            raise MigrateError(f"{t.pos}: ']' without a matching '['")
        else:
            words.append(t)
            i += 1
    if words:
        raise MigrateError(f"{_pos(words[0])}: missing ';' at the end of the statement")
    if opener is not None:
        raise MigrateError(f"{opener.pos}: '{{' is never closed")
    return tuple(items), i


def _pos(w: Token | tuple[Token, ...]) -> Pos:
    return w.pos if isinstance(w, Token) else (w[0].pos if w else Pos(0, 0))


# ---------------------------------------------------------------- meaning


@dataclass(frozen=True)
class Unmapped:
    """A directive ExaBGP knows and announcer has no counterpart for."""

    where: str
    directive: str
    pos: Pos


@dataclass(frozen=True)
class Process:
    name: str
    argv: tuple[str, ...]
    encoder: str
    pos: Pos


@dataclass(frozen=True)
class Neighbor:
    """One neighbor after `inherit`: values keep the position they were written at."""

    address: str
    pos: Pos
    values: dict[str, tuple[str, Pos]] = field(default_factory=dict)
    families: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()
    inherits: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExaConfig:
    processes: dict[str, Process]
    neighbors: tuple[Neighbor, ...]
    unmapped: tuple[Unmapped, ...]


# Neighbor settings kept as values (one word each).
NEIGHBOR_VALUES = (
    "router-id",
    "local-address",
    "local-as",
    "peer-as",
    "description",
    "hold-time",
    "md5-password",
)
# ExaBGP neighbor directives announcer's gobgpd configuration has no counterpart for.
NEIGHBOR_KNOWN = frozenset(
    [
        "passive",
        "listen",
        "connect",
        "host-name",
        "domain-name",
        "group-updates",
        "auto-flush",
        "adj-rib-out",
        "adj-rib-in",
        "manual-eor",
        "outgoing-ttl",
        "incoming-ttl",
        "md5-base64",
        "md5-ip",
        "peer-address",
        "source-interface",
        "rate-limit",
        "capability",
        "static",
        "announce",
        "flow",
        "l2vpn",
        "operational",
        "nexthop",
        "add-path",
        "graceful-restart",
        "multi-session",
        "route-refresh",
    ]
)
API_KNOWN = frozenset(
    ["neighbor-changes", "receive", "send", "encoder", "processes-match", "consolidate"]
)
PROCESS_KNOWN = frozenset(["respawn"])
FAMILIES = {("ipv4", "unicast"): "ipv4-unicast", ("ipv6", "unicast"): "ipv6-unicast"}


def read_config(text: str) -> ExaConfig:
    """Parse ExaBGP configuration text; raises MigrateError listing every problem."""
    tree = parse_tree(tokenize(text))
    problems: list[str] = []
    unmapped: list[Unmapped] = []
    processes: dict[str, Process] = {}
    templates: dict[str, _Raw] = {}
    raws: list[_Raw] = []
    for item in tree:
        head = item.words[0]
        kw = head.text if isinstance(head, Token) else ""
        if isinstance(item, Block) and kw == "process" and len(item.words) == 2:
            p = _process(item, problems, unmapped)
            if p.name in processes:
                problems.append(f"{item.pos}: process {p.name!r} defined twice")
            processes[p.name] = p
        elif isinstance(item, Block) and kw == "template" and len(item.words) == 1:
            for sub in item.items:
                if (
                    isinstance(sub, Block)
                    and sub.words[0].text == "neighbor"
                    and len(sub.words) == 2
                ):
                    name = sub.words[1].text
                    if name in templates:
                        problems.append(f"{sub.pos}: template neighbor {name!r} defined twice")
                    templates[name] = _neighbor(sub, problems, unmapped, f"template {name}")
                else:
                    problems.append(f"{sub.pos}: unknown directive {_name(sub)!r} in template")
        elif isinstance(item, Block) and kw == "neighbor" and len(item.words) == 2:
            raws.append(_neighbor(item, problems, unmapped, f"neighbor {item.words[1].text}"))
        else:
            problems.append(f"{item.pos}: unknown directive {_name(item)!r}")
    neighbors = [_resolve(r, templates, problems) for r in raws]
    if not neighbors and not problems:
        problems.append("no neighbor: nothing to migrate")
    for nb in neighbors:
        for name in nb.processes:
            if name not in processes:
                problems.append(f"{nb.pos}: neighbor {nb.address}: no process named {name!r}")
    if problems:
        raise MigrateError(problems)
    return ExaConfig(processes, tuple(neighbors), tuple(unmapped))


def _name(item: Item) -> str:
    return " ".join(w.text for w in item.words if isinstance(w, Token))


def _words(st: Statement) -> list[str]:
    out: list[str] = []
    for w in st.words:
        if isinstance(w, tuple):
            out.extend(t.text for t in w)
        else:
            out.append(w.text)
    return out


def _process(b: Block, problems: list[str], unmapped: list[Unmapped]) -> Process:
    name = b.words[1].text
    argv: tuple[str, ...] = ()
    encoder = "text"
    for it in b.items:
        head = it.words[0]
        kw = head.text if isinstance(head, Token) else ""
        if isinstance(it, Statement) and kw == "run" and len(it.words) > 1:
            argv = tuple(_words(it)[1:])
        elif isinstance(it, Statement) and kw == "encoder" and len(it.words) == 2:
            encoder = _words(it)[1]
        elif kw in PROCESS_KNOWN:
            unmapped.append(Unmapped(f"process {name}", _name(it), it.pos))
        else:
            problems.append(f"{it.pos}: unknown directive {kw!r} in process {name}")
    if not argv:
        problems.append(f"{b.pos}: process {name} has no run command")
    return Process(name, argv, encoder, b.pos)


@dataclass
class _Raw:
    """A neighbor or template as written, before inherit."""

    name: str
    pos: Pos
    settings: list[tuple[str, str, Pos]] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)
    inherits: list[tuple[str, Pos]] = field(default_factory=list)


def _neighbor(b: Block, problems: list[str], unmapped: list[Unmapped], where: str) -> _Raw:
    raw = _Raw(b.words[1].text, b.pos)
    for it in b.items:
        head = it.words[0]
        kw = head.text if isinstance(head, Token) else ""
        if isinstance(it, Statement) and kw in NEIGHBOR_VALUES:
            words = _words(it)
            if len(words) != 2:
                problems.append(f"{it.pos}: {kw} takes one value in {where}")
                continue
            raw.settings.append((kw, words[1], it.pos))
        elif isinstance(it, Statement) and kw == "inherit":
            raw.inherits.extend((w, it.pos) for w in _words(it)[1:])
        elif isinstance(it, Block) and kw == "family":
            for fam in it.items:
                pair = tuple(_words(fam)) if isinstance(fam, Statement) else ()
                if pair in FAMILIES:
                    raw.families.append(FAMILIES[pair])
                elif isinstance(fam, Statement) and len(pair) >= 1:
                    unmapped.append(Unmapped(where, f"family {' '.join(pair)}", fam.pos))
                else:
                    problems.append(f"{fam.pos}: unknown family {_name(fam)!r} in {where}")
        elif isinstance(it, Block) and kw == "api":
            _api(it, raw, problems, unmapped, where)
        elif kw in NEIGHBOR_KNOWN:
            unmapped.append(Unmapped(where, _name(it) if isinstance(it, Block) else kw, it.pos))
        else:
            problems.append(f"{it.pos}: unknown directive {kw!r} in {where}")
    return raw


def _api(b: Block, raw: _Raw, problems: list[str], unmapped: list[Unmapped], where: str) -> None:
    for it in b.items:
        head = it.words[0]
        kw = head.text if isinstance(head, Token) else ""
        if isinstance(it, Statement) and kw == "processes":
            raw.processes.extend(_words(it)[1:])
        elif kw in API_KNOWN:
            unmapped.append(Unmapped(f"{where} api", kw, it.pos))
        else:
            problems.append(f"{it.pos}: unknown directive {kw!r} in the api of {where}")


def _resolve(raw: _Raw, templates: dict[str, _Raw], problems: list[str]) -> Neighbor:
    """Templates first, in the order inherited, then the neighbor's own settings."""
    try:
        address = str(ipaddress.ip_address(raw.name))
    except ValueError:
        problems.append(f"{raw.pos}: neighbor {raw.name!r} is not an IP address")
        address = raw.name
    values: dict[str, tuple[str, Pos]] = {}
    families: list[str] = []
    processes: list[str] = []
    layers: list[_Raw] = []
    for name, pos in raw.inherits:
        if name not in templates:
            problems.append(f"{pos}: inherit {name!r}: no such template")
        else:
            layers.append(templates[name])
    for layer in [*layers, raw]:
        for key, value, pos in layer.settings:
            values[key] = (value, pos)
        if layer.families:
            families = list(layer.families)  # a family block replaces the inherited one
        processes += [p for p in layer.processes if p not in processes]
    return Neighbor(
        address,
        raw.pos,
        values,
        tuple(dict.fromkeys(families)),
        tuple(processes),
        tuple(n for n, _ in raw.inherits),
    )
