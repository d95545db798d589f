"""neutral-lang: a compiler for Neutral Prompt expressions.

    import neutral_lang as nl
    tree = nl.parse("a castle AND_PERP monster :-1")
"""
