"""A parser written the way the original extension's is (docs/migrating.md), as the benchmark baseline.

Token list from one regex split; recursive descent that copies the token list for every part
(quadratic in the number of parts) and backs off a group attempt when the bracket holds fewer
than two parts (exponential on nested unclosed ``[``); recursion-bound in depth. It returns
only what the benchmark needs (nested lists of ``(keyword, text, weight)``), and is not used by
the package.
"""

from __future__ import annotations

import re

_KEYWORDS = ("AND", "AND_PERP", "AND_SALT", "AND_TOPK")
_SPLIT = re.compile(r"(\[|\]|:|" + "|".join(rf"\b{k}\b" for k in _KEYWORDS) + ")")


def _number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def parse(text: str) -> list:
    tokens = [t for t in _SPLIT.split(text) if t.strip()]
    return _parts(tokens, nested=False)


def _parts(tokens: list[str], *, nested: bool) -> list:
    parts = [_part(tokens, first=True, nested=nested)]
    while tokens and not (nested and tokens[0] == "]"):
        parts.append(_part(tokens, first=False, nested=nested))
    return parts


def _part(tokens: list[str], *, first: bool, nested: bool):
    keyword = tokens.pop(0) if not first and tokens[0] in _KEYWORDS else "AND"
    trial = tokens.copy()  # copied for every part, as the original does: quadratic in parts
    if trial and trial[0] == "[":
        trial.pop(0)
        inner = _parts(trial, nested=True)
        if trial:
            trial.pop(0)
        if len(inner) > 1:
            tokens[:] = trial
            weight = 1.0
            if len(tokens) >= 2 and tokens[0] == ":" and _number(tokens[1]):
                tokens.pop(0)
                weight = float(tokens.pop(0))
            return (keyword, inner, weight)
    text, depth, weight = "", 0, 1.0
    while tokens:
        tok = tokens[0]
        if tok == "]":
            if depth == 0 and nested:
                break
            depth = max(0, depth - 1)
        elif tok == "[":
            depth += 1
        elif tok == ":":
            if len(tokens) >= 2 and _number(tokens[1].strip()) and (
                len(tokens) < 3 or tokens[2] in _KEYWORDS or (tokens[2] == "]" and depth == 0)
            ):
                tokens.pop(0)
                weight = float(tokens.pop(0))
                break
        elif tok in _KEYWORDS:
            break
        text += tokens.pop(0)
    return (keyword, text, weight)
