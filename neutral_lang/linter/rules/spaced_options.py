"""NP304 spaced-options: ``AND_TOPK (k=0.1) glasses``.

An option list must follow its keyword directly (docs/language.md, "Keyword options"). After a space, a parenthesis
is the part's text -- ``AND_TOPK (glasses:1.3)`` must keep meaning emphasis -- so
``(k=0.1)`` is sent to the text encoder and the default options apply.
"""

from __future__ import annotations

import re

from ...ast import Span, iter_parts
from ...errors import ParseError
from ...keywords import spec
from ...parser import parse
from ..registry import rule
from ..scan import splits_text

RULE = rule("spaced-options")
_SPACED = re.compile(r"[ \t]+(\([^()\n]*\))")
_ITEM = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=\s*\S+\s*")


def _looks_like_options(paren: str) -> bool:
    return all(_ITEM.fullmatch(item) for item in paren[1:-1].split(","))


def check(ctx):
    if ctx.prompt is None:
        return
    text = ctx.text
    for _, part in iter_parts(ctx.prompt):
        kspan = part.keyword_span
        if kspan is None or part.options:
            continue
        m = _SPACED.match(text, kspan.end)
        if m is None or not _looks_like_options(m.group(1)):
            continue
        kw = part.keyword.value
        fixed = kw + m.group(1)
        try:
            parse(f"x {fixed} y")
        except ParseError as err:
            note, fix = f" (and as options it would be an error: {err.label})", None
        else:
            # Without text after them, the options were the part's only text: moved, the part is empty.
            note, fix = "", fixed if splits_text(text, kspan.start, m.end(1), kw) else None
        yield RULE.diagnostic(
            Span(kspan.start, m.end(1)),
            f"'{m.group(1)}' after a space is text, not options of {kw}{note}",
            hint=f"write the options directly after the keyword: `{fixed}`" if fix is not None else
            f"write the options directly after the keyword, {fixed}, and the part's text after them" if not note else
            f"options go directly after the keyword, and {kw} takes: {', '.join(o.name for o in spec(part.keyword).options)}",
            fix=fix,
        )
