"""NP201 unbalanced-bracket: ``a (castle``, ``goodbye]``, ``a AND_PERP [b AND c``.

Lenient parsing reads an unmatched bracket as text, as A1111 does (docs/language.md): an unclosed
``(`` or ``[`` emphasises or de-emphasises the rest of its part, an unmatched ``)`` or ``]`` is
passed to the text encoder as a character, and an unclosed ``[`` never opens a group. Square and
round brackets pair separately, as in A1111; escapes (``\\[``) are not brackets.
"""

from __future__ import annotations

from ...ast import Span
from ..registry import rule
from ..scan import scan_brackets

RULE = rule("unbalanced-bracket")

_MESSAGES = {
    "(": "unclosed '(': A1111 emphasises the rest of its part (x1.1)",
    "[": "unclosed '[': it opens no group; A1111 de-emphasises the rest of its part (/1.1)",
    ")": "unmatched ')': A1111 passes it to the text encoder as a character",
    "]": "unmatched ']': A1111 passes it to the text encoder as a character",
}
_PARTNER = {"(": ")", "[": "]", ")": "(", "]": "["}


def check(ctx):
    for pos, ch in scan_brackets(ctx.text).unmatched:
        other = _PARTNER[ch]
        add = f"add the '{other}' it {'needs' if ch in '([' else 'closes'}"
        yield RULE.diagnostic(
            Span(pos, pos + 1),
            _MESSAGES[ch],
            hint=f"remove it, {add}, or write `\\{ch}` for a literal bracket",
        )
