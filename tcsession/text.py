"""Text from hosts made safe for a terminal.

File contents, log lines and command output come from the hosts; printed as they are, an
escape sequence in them would drive the operator's terminal (colours, titles, cursor moves,
even "paste this" tricks). `printable` escapes every C0 and C1 control character except
newline and tab, so what is shown is what the host sent, visibly.
"""

from __future__ import annotations

import re

_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAMED = {"\x1b": "\\e", "\r": "\\r", "\x00": "\\0", "\x08": "\\b", "\x0b": "\\v", "\x0c": "\\f", "\x07": "\\a"}


def _escape(m: re.Match) -> str:
    c = m[0]
    return _NAMED.get(c) or f"\\x{ord(c):02x}"


def printable(s: str) -> str:
    """`s` with control characters (ESC, CR, BEL, DEL, C1 ...) written as visible escapes.

    Newline and tab are kept; a backslash is left as it is (the output is for eyes, not
    for parsing back). Pure: no terminal is consulted."""
    return _CONTROLS.sub(_escape, s)
