"""tcsession.text.printable: host text shown without driving the terminal."""

import pytest

from tcsession.text import printable


@pytest.mark.parametrize("raw,shown", [
    ("plain text", "plain text"),
    ("two\nlines\tand a tab", "two\nlines\tand a tab"),
    ("\x1b[31mred\x1b[0m", "\\e[31mred\\e[0m"),
    ("\x1b]0;owned\x07", "\\e]0;owned\\a"),  # set the window title
    ("progress\rover", "progress\\rover"),  # carriage return would hide "progress"
    ("nul\x00byte", "nul\\0byte"),
    ("del\x7f", "del\\x7f"),
    ("csi\x9b2J", "csi\\x9b2J"),  # C1 control: a one-byte CSI on some terminals
    ("\x85next line", "\\x85next line"),
    ("bs\x08\x0b\x0c", "bs\\b\\v\\f"),
    ("\x01\x1f", "\\x01\\x1f"),
    ("é ü 日本 ☃", "é ü 日本 ☃"),  # printable non-ASCII stays
    ("back\\slash", "back\\slash"),
    ("", ""),
])
def test_printable(raw, shown):
    assert printable(raw) == shown


def test_no_control_character_survives():
    every = "".join(chr(i) for i in range(0x00, 0xA0))
    out = printable(every)
    assert [c for c in out if ord(c) < 0x20 and c not in "\n\t" or 0x7F <= ord(c) < 0xA0] == []
    assert "\n" in out and "\t" in out
