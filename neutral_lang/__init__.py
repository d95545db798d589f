"""neutral-lang: a compiler for Neutral Prompt expressions (A1111's AND, AND_PERP, AND_SALT,
AND_TOPK) for diffusion guidance.

    import neutral_lang as nl
    tree = nl.parse("beautiful castle landscape AND_PERP monster house castle :-1")
    nl.format(tree)                      # canonical text
    nl.lint("AND_PREP monster")          # diagnostics with spans and fixes
    nl.fix("a AND_PREP monster")         # the safe fixes applied
    prog = nl.compile("a castle AND_TOPK glasses :0.4")
    prog.run(pipe)                       # a diffusers pipeline

The core (parse, format, lint) imports no torch; ``compile(...).guide`` and ``.run`` load the
torch and diffusers backends on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .ast import Group, Keyword, Leaf, Option, Part, Prompt, Span
from .errors import ParseError
from .formatter import format
from .parser import parse

__version__ = "0.1.0"

__all__ = [
    "parse", "format", "lint", "fix", "compile", "Program", "ParseError", "Diagnostic",
    "Prompt", "Part", "Leaf", "Group", "Option", "Keyword", "Span", "emphasis", "testing",
]

# Heavier or optional pieces load on first use: `import neutral_lang` stays fast and torch-free.
_LAZY = {
    "lint": ("neutral_lang.linter", "lint"),
    "fix": ("neutral_lang.linter", "fix"),
    "Diagnostic": ("neutral_lang.linter", "Diagnostic"),
    "compile": ("neutral_lang.compiler", "compile"),
    "Program": ("neutral_lang.compiler", "Program"),
    "emphasis": ("neutral_lang.emphasis", None),
    "testing": ("neutral_lang.testing", None),
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'neutral_lang' has no attribute {name!r}")
    module = importlib.import_module(target[0])
    value = module if target[1] is None else getattr(module, target[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
