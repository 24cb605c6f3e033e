"""Showing text that came from the input on a terminal: as text, never as markup or control.

Invariant I13 (safe display). User ids, sources, reading ids, reasons, messages and paths come
from files a stranger may have written. Printed through rich's markup, ``[/x]`` crashes the
command (``MarkupError``) and ``[link=...]`` rewrites what is shown; printed raw, ``ESC[2J``
clears the screen and an OSC sequence retitles the window or plants a hyperlink.

So the CLI never puts such a string into a markup string. It hands rich a :class:`rich.text.Text`
(which rich does not parse) made by :func:`text` from :func:`clean`, which replaces every
control character (C0, DEL, C1, and the Unicode bidirectional and line-separator controls that
reorder or break what a terminal shows) by a visible escape: ``ESC`` becomes ``\\x1b``, a tab
``\\t``, U+202E ``\\u202e``. The character that starts a sequence is gone, so nothing after it
is a sequence any more, and an operator still sees (and can copy) what is stored. Stripping the
characters silently instead would make two different ids look the same.

>>> clean("ab\\x1b[2Jc")
'ab\\\\x1b[2Jc'
>>> clean("[/x] [link=https://example.org]y[/link]")
'[/x] [link=https://example.org]y[/link]'
>>> text("[/x]").plain
'[/x]'
"""

from __future__ import annotations

import re
from typing import Final

from rich.text import Text

__all__ = ["clean", "text", "error_text"]

#: C0 controls, DEL, C1 controls; Arabic letter mark, LRM/RLM, line and paragraph separators,
#: bidirectional embeddings, overrides and isolates.
_CONTROL: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: object) -> str:
    """``str(value)`` with every control character replaced by a visible escape."""
    shown = str(value)
    return _CONTROL.sub(_escape, shown) if _CONTROL.search(shown) else shown


def text(value: object, style: str = "") -> Text:
    """``value`` as rich :class:`~rich.text.Text`: shown literally, never read as markup.

    A narrow table column folds it onto more lines rather than cutting it short: an id that
    ends in an ellipsis cannot be copied into the next command.
    """
    return Text(clean(value), style=style, overflow="fold")


def error_text(message: object, label: str = "error") -> Text:
    """A one-line ``error: message`` with only the label styled."""
    return Text.assemble((f"{label}: ", "bold red"), clean(message))
