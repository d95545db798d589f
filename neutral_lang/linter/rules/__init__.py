"""One module per lint rule, named after the rule (``misspelt-keyword`` -> ``misspelt_keyword.py``).

Each module takes its code and severity from the registry (``RULE = rule("misspelt-keyword")``)
and defines either

- ``check(ctx) -> Iterable[Diagnostic]`` over a :class:`~neutral_lang.linter.engine.Context`
  (the text, and its AST or ``None``); or
- for errors the parser raises: ``handles(err)``, ``from_parse_error(err, text)`` and
  ``recover(text, err)`` (the text with the offending characters blanked, same length, or
  ``None`` when there is no way past the error).

Rules are pure functions of their input and must not raise; the engine turns an exception into
an ``NP001`` diagnostic anyway.
"""
