"""Hypothesis strategies for .grc programs: random ASTs in the form the parser produces,
and messy source text for them (random comments, line breaks, `;` separators)."""

from __future__ import annotations

import re

from hypothesis import strategies as st

from grape_dsl import ast
from grape_dsl.builtins import BUILTINS
from grape_dsl.fmt import format_module
from grape_dsl.parser import keywords

TAG_KEYWORDS = ("task", "path", "subgoal", "stage", "param", "let", "sum", "mean", "max")

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(lambda n: n not in keywords())
tag_names = names | st.sampled_from(TAG_KEYWORDS)

# Expression numbers are never negative: `-2` parses as Neg(Number(2)).
numbers = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(float),
    st.floats(min_value=0, max_value=1e300, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.1, 0.02, 1e-05, 1.5e-07, 2.5e16, 0.3]),
)
signed_numbers = numbers | numbers.map(lambda v: -v)
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\n\r"),
    max_size=20,
)


def _composite(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.builds(ast.Call, st.sampled_from(sorted(BUILTINS)), st.lists(children, min_size=1, max_size=3).map(tuple)),
        st.builds(ast.Component, children, st.sampled_from(["x", "y", "z"])),
        st.builds(ast.Neg, children),
        st.builds(ast.Not, children),
        st.builds(ast.Binary, st.sampled_from(["+", "-", "*", "/"]), children, children),
        st.builds(ast.Compare, st.sampled_from(["<=", "<", ">=", ">", "==", "!="]), children, children),
        st.builds(ast.BoolOp, st.sampled_from(["and", "or"]), children, children),
    )


exprs = st.recursive(
    st.one_of(st.builds(ast.Number, numbers), st.builds(ast.Bool, st.booleans()), st.builds(ast.Name, names)),
    _composite,
    max_leaves=12,
)

sources = st.builds(ast.Source, st.lists(names, min_size=1, max_size=3).map(tuple))
optional_exprs = st.none() | exprs


@st.composite
def keypoints(draw: st.DrawFn) -> ast.KeypointDecl:
    op = draw(st.sampled_from([None, "+", "-"]))
    offset = draw(exprs) if op else None
    return ast.KeypointDecl(draw(names), draw(sources), op, offset)


@st.composite
def constraints(draw: st.DrawFn) -> ast.Constraint:
    kind = draw(st.sampled_from(["subgoal", "path"]))
    over = draw(st.sampled_from([None, "sum", "mean", "max"])) if kind == "path" else None
    return ast.Constraint(
        kind, draw(names), draw(exprs), draw(optional_exprs), draw(optional_exprs), over, draw(st.none() | tag_names)
    )


stages = st.builds(ast.Stage, names, optional_exprs, st.lists(constraints(), max_size=3).map(tuple))

task_decls = st.one_of(
    st.builds(ast.ParamDecl, names, signed_numbers),
    st.builds(ast.UnreachedDecl, signed_numbers),
    st.builds(ast.LetDecl, names, exprs),
    st.builds(ast.KeypointsBlock, st.lists(keypoints(), max_size=3).map(tuple)),
    st.builds(ast.SignalsBlock, st.lists(st.builds(ast.SignalDecl, names, sources), max_size=3).map(tuple)),
    stages,
)
objective_decls = st.one_of(
    st.builds(ast.ImportDecl, text),
    st.builds(ast.TagOverride, tag_names, st.none() | signed_numbers, st.none() | signed_numbers),
    st.builds(ast.ParamDecl, names, signed_numbers),
    st.builds(ast.UnreachedDecl, signed_numbers),
)

task_files = st.builds(ast.TaskFile, names, st.none() | text, st.lists(task_decls, max_size=6).map(tuple))
objective_files = st.builds(
    ast.ObjectiveFile, names, st.none() | text, st.lists(objective_decls, max_size=6).map(tuple)
)
modules = task_files | objective_files

comment_texts = text.map(lambda t: " " + t if t else t)


@st.composite
def messy_sources(draw: st.DrawFn) -> tuple[ast.Module, str, list[str]]:
    """A module, a messy but equivalent source for it, and the comment texts put in.

    Starts from the canonical text and, between lines, adds own-line comments, trailing
    comments, joins lines with spaces or `;` (only where no comment ends the line), breaks
    lines inside a construct with a comment, and re-indents at random."""
    module = draw(modules)
    lines = format_module(module).splitlines()
    out: list[str] = []
    comments: list[str] = []
    for line in lines:
        if draw(st.integers(0, 4)) == 0:
            comment = draw(comment_texts)
            comments.append(comment)
            out.append(" " * draw(st.integers(0, 6)) + "#" + comment)
        if not line.strip():
            continue
        indent = " " * draw(st.integers(0, 3)) + "\t" * draw(st.integers(0, 1))
        code = line.strip()
        spaces = [i for i, ch in enumerate(code) if ch == " "]
        if spaces and '"' not in code and draw(st.integers(0, 4)) == 0:
            # break the construct over two lines with a comment at the end of the first
            cut = draw(st.sampled_from(spaces))
            comment = draw(comment_texts)
            comments.append(comment)
            code = code[:cut] + " #" + comment + "\n" + indent + code[cut + 1 :]
        out.append(indent + code)
        if draw(st.integers(0, 4)) == 0:
            comment = draw(comment_texts)
            comments.append(comment)
            out[-1] += " " * draw(st.integers(0, 3)) + "#" + comment
        elif draw(st.booleans()) and '"' not in line and not line.rstrip().endswith("{"):
            # join with the next line: a space or a `;` separator (not after `{`, where `;`
            # is still fine but keeps the case simple)
            out[-1] += draw(st.sampled_from([" ", " ; ", ";"])) + "\x00"
    text_out = "\n".join(out).replace("\x00\n", "")
    text_out = re.sub(r"\x00$", "", text_out)
    return module, text_out + draw(st.sampled_from(["", "\n", "\n\n"])), comments
