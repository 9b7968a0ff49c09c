"""The canonical layout of .grc files, keeping every comment.

One declaration, binding or constraint per line; four-space indentation; constraint
attributes in the order tol, weight, over, tag; numbers in their shortest round-trip form
(`0.1`, `2`, `1e-05`); only the parentheses precedence requires; a blank line between
top-level groups (consecutive params, lets, imports and tag overrides stay together).

Comments: a comment on a line of its own goes before the next line of code, at that code's
indentation (inside a block when the block's `}` comes next); a comment after code on its
line stays at the end of the line of the construct it followed.
`parse(format_module(m)) == m` for every parsed module, and formatting is idempotent.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from grape_dsl import ast
from grape_dsl.parser import parse

INDENT = "    "

# Binding strength, loosest first; the grammar's levels (docs/language.md, "Expressions").
_OR, _AND, _NOT, _COMPARE, _SUM, _PRODUCT, _UNARY, _POSTFIX, _ATOM = range(1, 10)
_BINARY_PREC = {"+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT}

# Declarations that sit together without a blank line when consecutive.
_GROUPED = (ast.ParamDecl, ast.LetDecl, ast.ImportDecl, ast.TagOverride, ast.UnreachedDecl)


def format_number(value: float) -> str:
    """Shortest text that reads back as exactly `value`: `2` not `2.0`, `0.1` not `0.10000000000000001`."""
    value = float(value)  # an AST built by hand may hold an int
    if not math.isfinite(value):
        raise ValueError(f"cannot write {value!r} in a .grc file")
    if value < 0:
        return "-" + format_number(-value)
    if value.is_integer() and value < 1e16:
        return str(int(value))
    return repr(value)  # Python's repr is the shortest round-trip form, e.g. '1e-05'


def format_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _precedence(expr: ast.Expr) -> int:
    if isinstance(expr, ast.BoolOp):
        return _OR if expr.op == "or" else _AND
    if isinstance(expr, ast.Not):
        return _NOT
    if isinstance(expr, ast.Compare):
        return _COMPARE
    if isinstance(expr, ast.Binary):
        return _BINARY_PREC[expr.op]
    if isinstance(expr, ast.Neg):
        return _UNARY
    if isinstance(expr, ast.Component):
        return _POSTFIX
    return _ATOM


def format_expr(expr: ast.Expr, min_prec: int = 0) -> str:
    """`expr` with the fewest parentheses that keep its meaning where binding `min_prec` is needed."""
    text = _format_bare(expr)
    return f"({text})" if _precedence(expr) < min_prec else text


def _format_bare(expr: ast.Expr) -> str:
    if isinstance(expr, ast.Number):
        return format_number(expr.value)
    if isinstance(expr, ast.Bool):
        return "true" if expr.value else "false"
    if isinstance(expr, ast.Name):
        return expr.ident
    if isinstance(expr, ast.Call):
        return f"{expr.func}({', '.join(format_expr(a) for a in expr.args)})"
    if isinstance(expr, ast.Component):
        return f"{format_expr(expr.base, _POSTFIX)}.{expr.axis}"
    if isinstance(expr, ast.Neg):
        operand = format_expr(expr.operand, _UNARY)
        return f"- {operand}" if operand.startswith("-") else f"-{operand}"
    if isinstance(expr, ast.Not):
        return f"not {format_expr(expr.operand, _NOT)}"
    if isinstance(expr, (ast.BoolOp, ast.Binary)):
        prec = _precedence(expr)  # left-associative: the right operand binds tighter
        return f"{format_expr(expr.left, prec)} {expr.op} {format_expr(expr.right, prec + 1)}"
    if isinstance(expr, ast.Compare):  # comparisons do not chain: both sides bind tighter
        return f"{format_expr(expr.left, _SUM)} {expr.op} {format_expr(expr.right, _SUM)}"
    raise TypeError(f"fmt: no layout for expression node {type(expr).__name__}")


def format_constraint(constraint: ast.Constraint) -> str:
    parts = [f"{constraint.kind} {constraint.name}: {format_expr(constraint.expr)}"]
    if constraint.tol is not None:
        parts.append(f"tol {format_expr(constraint.tol)}")
    if constraint.weight is not None:
        parts.append(f"weight {format_expr(constraint.weight)}")
    if constraint.over is not None:
        parts.append(f"over {constraint.over}")
    if constraint.tag is not None:
        parts.append(f"tag {constraint.tag}")
    return " ".join(parts)


# ---------------------------------------------------------------------------- layout


@dataclass
class _Line:
    """One output line of code and where its construct starts in the source."""

    text: str
    depth: int
    start: int  # source offset, to place comments
    comment_depth: int  # indentation for own-line comments placed before this line
    blank_before: bool = False


def _block(header: str, depth: int, node_span: ast.Span, body: list[_Line]) -> list[_Line]:
    start = node_span.start_pos
    if not body:
        return [_Line(header + " {}", depth, start, depth)]
    close = max(node_span.end_pos - 1, start)
    return [_Line(header + " {", depth, start, depth), *body, _Line("}", depth, close, depth + 1)]


def _task_lines(decl: ast.TaskDecl) -> list[_Line]:
    start = decl.span.start_pos
    if isinstance(decl, ast.ParamDecl):
        return [_Line(f"param {decl.name} = {format_number(decl.value)}", 0, start, 0)]
    if isinstance(decl, ast.UnreachedDecl):
        return [_Line(f"unreached {format_number(decl.value)}", 0, start, 0)]
    if isinstance(decl, ast.LetDecl):
        return [_Line(f"let {decl.name} = {format_expr(decl.value)}", 0, start, 0)]
    if isinstance(decl, ast.KeypointsBlock):
        body = []
        for kp in decl.keypoints:
            text = f"{kp.name} = {kp.source.dotted}"
            if kp.offset is not None:
                text += f" {kp.offset_op or '+'} {format_expr(kp.offset, _PRODUCT)}"
            body.append(_Line(text, 1, kp.span.start_pos, 1))
        return _block("keypoints", 0, decl.span, body)
    if isinstance(decl, ast.SignalsBlock):
        body = [_Line(f"{s.name} = {s.source.dotted}", 1, s.span.start_pos, 1) for s in decl.signals]
        return _block("signals", 0, decl.span, body)
    if isinstance(decl, ast.Stage):
        header = f"stage {decl.name}"
        if decl.until is not None:
            header += f" until {format_expr(decl.until)}"
        body = [_Line(format_constraint(c), 1, c.span.start_pos, 1) for c in decl.constraints]
        return _block(header, 0, decl.span, body)
    raise TypeError(f"fmt: no layout for task declaration {type(decl).__name__}")


def _objective_lines(decl: ast.ObjectiveDecl) -> list[_Line]:
    start = decl.span.start_pos
    if isinstance(decl, ast.ImportDecl):
        return [_Line(f"import {format_string(decl.target)}", 0, start, 0)]
    if isinstance(decl, ast.TagOverride):
        attrs = []
        if decl.tol is not None:
            attrs.append(f"tol {format_number(decl.tol)}")
        if decl.weight is not None:
            attrs.append(f"weight {format_number(decl.weight)}")
        body = " ".join(attrs)
        return [_Line(f"tag {decl.tag} {{ {body} }}" if body else f"tag {decl.tag} {{}}", 0, start, 0)]
    if isinstance(decl, (ast.ParamDecl, ast.UnreachedDecl)):
        return _task_lines(decl)
    raise TypeError(f"fmt: no layout for objective declaration {type(decl).__name__}")


def _module_lines(module: ast.Module) -> list[_Line]:
    if isinstance(module, ast.TaskFile):
        header, text, layout = "task", module.instruction, _task_lines
    else:
        header, text, layout = "objective", module.description, _objective_lines
    first = f"{header} {module.name}" + (f" {format_string(text)}" if text is not None else "")
    lines = [_Line(first, 0, module.span.start_pos, 0)]
    previous: object = None
    for decl in module.decls:
        decl_lines = layout(decl)
        together = isinstance(decl, _GROUPED) and type(decl) is type(previous)
        decl_lines[0].blank_before = not together
        lines.extend(decl_lines)
        previous = decl
    return lines


def format_module(module: ast.Module) -> str:
    """The canonical text of a parsed module, with its comments placed as described above."""
    lines = _module_lines(module)
    comments = sorted(module.comments, key=lambda c: c.span.start_pos)
    trailing: dict[int, list[str]] = {}
    leading: dict[int, list[ast.Comment]] = {}
    after_all: list[ast.Comment] = []
    starts = [line.start for line in lines]  # ascending: lines follow the source
    for comment in comments:
        following = bisect.bisect_right(starts, comment.span.start_pos)  # first line after it
        if comment.trailing:  # belongs to the last line whose construct started before it
            trailing.setdefault(max(following - 1, 0), []).append(comment.text.strip())
        elif following == len(lines):
            after_all.append(comment)
        else:
            leading.setdefault(following, []).append(comment)

    out: list[str] = []
    for i, line in enumerate(lines):
        if line.blank_before and out:
            out.append("")
        for comment in leading.get(i, ()):
            out.append(INDENT * line.comment_depth + "#" + comment.text.rstrip())
        text = INDENT * line.depth + line.text
        if i in trailing:
            text += "  " + " ".join("#" + (f" {t}" if t else "") for t in trailing[i])
        out.append(text)
    for comment in after_all:
        out.append("#" + comment.text.rstrip())
    return "\n".join(out) + "\n"


def format_source(text: str | bytes, path: str = "<string>") -> str:
    """Parse and format; raises GrcError on syntax errors."""
    return format_module(parse(text, path))
