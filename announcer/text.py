"""Text from outside (frontend names, DataPlaneAPI messages) made safe to print.

A frontend name is whatever HAProxy's configuration says; one with a newline in it
could forge a log line, and escape sequences could rewrite an operator's terminal
through `announcer status`. Every log line and the status table go through
`printable()`: control and format characters (C0, C1, DEL, bidi overrides, line
separators) become visible escapes, everything else is left as it is.
"""

from __future__ import annotations

import unicodedata


def _escape(ch: str) -> str:
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def printable(text: str) -> str:
    """`text` with every control or format character escaped (\\n -> \\x0a)."""
    if text.isprintable():  # the common case, checked in C
        return text
    return "".join(_escape(c) if _unsafe(c) else c for c in text)
