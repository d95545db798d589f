"""Deep trees, linear output and checked inputs of the compiler (the hostile-input issue).

- IR groups and parts, plans and programs: ``repr``, ``==``, ``hash``, ``pickle``, ``copy.deepcopy``
  at 10^4 levels of nesting (with Python's default recursion limit);
- ``explain()`` output linear in the depth;
- ``emphasis.schedule`` answers text built of A1111 constructs and stray brackets with one of the
  grammar's readings;
- ``compile`` refuses what is not a prompt with a TypeError naming the expected types, and its
  cache is bounded in bytes.
"""

from __future__ import annotations

import copy
import pickle
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import neutral_lang as nl
from neutral_lang import compiler, emphasis, ir

from leaf_readings import is_a_reading  # noqa: E402  (tests/ is on sys.path)

DEPTH = 10_000


def nested(depth: int, op: str = "AND_PERP") -> str:
    return f"[a {op} " * depth + "b" + "]" * depth


@pytest.fixture(scope="module")
def deep():
    assert sys.getrecursionlimit() <= 10_000  # no test may lean on a raised limit
    return nl.compile(nested(DEPTH))


def test_the_deep_prompt_is_really_deep(deep):
    assert sum(1 for _ in ir.walk(deep.ir.roots[0])) >= 2 * DEPTH


def test_deep_ir_compares_hashes_and_prints(deep):
    again = nl.compile(nested(DEPTH), passes=deep.passes)  # another compile: equal, not identical
    module, other = deep.ir, again.ir
    assert module is not other and module.roots[0] is not other.roots[0]
    assert module == other and hash(module) == hash(other)
    assert module.roots[0].parts[0] == other.roots[0].parts[0]
    assert nl.compile(nested(DEPTH - 1)).ir != module
    text = repr(module.roots[0])
    assert text.startswith("Group(parts=(Part(op=<Op.AND: 'AND'>") and text.count("Group(") == DEPTH + 1
    assert len(text) < 400 * (2 * DEPTH + 1)  # linear in the number of parts


def test_deep_ir_pickles_and_copies(deep):
    module = deep.ir
    back = pickle.loads(pickle.dumps(module))
    assert back == module and back is not module
    assert copy.deepcopy(module) is module and copy.copy(module.roots[0]) is module.roots[0]
    part = module.roots[0].parts[0]
    assert type(part.body) is ir.Group and pickle.loads(pickle.dumps(part)) == part


def test_small_ir_repr_and_equality_are_the_dataclass_ones():
    group = nl.compile("a AND_PERP b :-0.5").ir.roots[0]
    part = group.parts[1]
    assert repr(part) == (f"Part(op={part.op!r}, weight=-0.5, body=Cond(id=1), span={part.span!r}, "
                          f"window={part.window!r}, options={part.options!r})")
    assert repr(group).startswith("Group(parts=(Part(") and repr(group).endswith(f"), span={group.span!r})")
    single = ir.Group((part,), group.span)
    assert repr(single) == f"Group(parts=({part!r},), span={group.span!r})"
    assert single != group and single == ir.Group((part,), group.span) and part != group


def test_deep_plan_and_program_compare_hash_pickle_and_copy(deep):
    plan = deep.plan
    assert pickle.loads(pickle.dumps(plan)) == plan and hash(plan) == hash(copy.deepcopy(plan))
    assert len(repr(deep)) < len(deep.texts[0]) + 200  # the text once, nothing per level
    assert copy.deepcopy(deep) is deep and copy.copy(deep) is deep
    back = pickle.loads(pickle.dumps(deep))
    assert back == deep and hash(back) == hash(deep) and back.plan == deep.plan
    assert deep != nl.compile("a AND b")


def test_explain_output_is_linear_in_depth():
    sizes = {}
    for depth in (500, 5000):
        text = nl.compile(nested(depth)).explain()
        sizes[depth] = len(text)
        assert f"[depth {depth}]" in text  # deep lines say their depth instead of indenting further
    assert sizes[5000] < 12 * sizes[500]


def test_explain_indents_shallow_trees_as_before():
    out = nl.compile("a AND_PERP [b AND_SALT c] :-1").explain()
    assert "\n  AND_PERP :-1 group\n    AND 'b'\n    AND_SALT 'c'\n" in out


# ---------------------------------------------------------------------------------------------
# emphasis.schedule on constructs mixed with stray brackets

_UNITS = ["[b] ", "[a:b:3]", "[x|y]", "(c:1.2)", "a ", "[[a|b]:c:0.5]", "([b])", "[a:(b):2]", "[a:b:c:3]",
          "[:x:2]", "[x::4]", "[a|]", "(d)", "[(e:1.1)|f]", "[ [b] :2]", "\\[b\\]", "[2:3]", "[0.5]", "[[x]]",
          " , ", "[", "]", "(", ")", ":", "|", "\\", "1", "\n"]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(_UNITS), min_size=1, max_size=3), st.sampled_from([1, 5, 20]))
def test_schedule_of_constructs_and_strays_is_a_reading(units, steps):
    assert is_a_reading("".join(units), steps)


def test_schedule_of_many_bracketed_words_is_fast_and_right():
    text = "[b] " * 2000 + "[x:y:5] " * 500 + "[c|d]"
    entries = emphasis.schedule(text, 20)
    assert len(entries) == 20 and entries[0][1].startswith("[b] [b] ") and entries[-1][1].endswith("y d")
    assert entries[0][1].endswith("x c") and "[x:y:5]" not in entries[-1][1]


# ---------------------------------------------------------------------------------------------
# compile's inputs and cache


@pytest.mark.parametrize("bad", [{"a": 1}, None, 3, b"a AND b", [], ["a", 1], {"a"}, ("a", None)])
def test_compile_refuses_what_is_not_a_prompt(bad):
    with pytest.raises(TypeError, match="Expected compile\\(\\) source to be a str or a non-empty list/tuple of str"):
        nl.compile(bad)


@pytest.mark.parametrize("kw, match", [({"passes": "abc"}, "passes to be a sequence"), ({"passes": [1]}, "passes"),
                                       ({"strict": "yes"}, "strict to be a bool")])
def test_compile_checks_its_options(kw, match):
    with pytest.raises(TypeError, match=match):
        nl.compile("a", **kw)


def test_the_compile_cache_is_bounded_in_bytes():
    cache = compiler._ByteBoundedCache(10_000)
    programs = [nl.compile(f"a AND b{i}") for i in range(3)]
    for i, p in enumerate(programs):
        cache.put(i, p, 4_000)
    assert cache.used <= 10_000 and cache.get(0) is None and cache.get(2) is programs[2]  # oldest evicted
    cache.put("huge", programs[0], 20_000)  # larger than the budget: never held
    assert cache.get("huge") is None and cache.used <= 10_000


def test_the_byte_estimate_covers_a_large_prompt():
    import tracemalloc

    text = " AND_PERP ".join(f"w{i}" for i in range(2000))
    compiler._CACHE.clear()
    nl.parse("a")
    tracemalloc.start()
    program = compiler._compile(text, None, False)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert compiler._estimate_bytes(program) >= held
    assert compiler.CACHE_BYTES // compiler._estimate_bytes(program) < 512  # far fewer than 512 such entries
