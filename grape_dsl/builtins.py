"""The builtin functions of .grc: one table of signatures shared by the checker and the compiler.

Types are `scalar`, `vec3` and `bool`. A signature lists argument types; `VARIADIC` marks a
function that takes two or more arguments of one type (`min`, `max`, `mean`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Type = Literal["scalar", "vec3", "bool"]
SCALAR: Type = "scalar"
VEC3: Type = "vec3"
BOOL: Type = "bool"

# The step index within the trajectory (0-based), usable in any expression as `t`.
STEP_INDEX_NAME = "t"


@dataclass(frozen=True)
class Signature:
    params: tuple[Type, ...]
    returns: Type
    variadic: bool = False  # params holds one type, repeated; at least `min_args` arguments
    min_args: int = 0
    doc: str = ""


def _variadic(kind: Type, returns: Type, doc: str) -> Signature:
    return Signature((kind,), returns, variadic=True, min_args=2, doc=doc)


# A name may have several overloads; the first whose parameter types match is used.
BUILTINS: dict[str, tuple[Signature, ...]] = {
    "vec": (Signature((SCALAR, SCALAR, SCALAR), VEC3, doc="a vector from three scalars"),),
    "dist": (Signature((VEC3, VEC3), SCALAR, doc="Euclidean distance"),),
    "dist_xy": (Signature((VEC3, VEC3), SCALAR, doc="distance in the table plane (x, y)"),),
    "norm": (Signature((VEC3,), SCALAR, doc="Euclidean length"),),
    "dot": (Signature((VEC3, VEC3), SCALAR, doc="dot product"),),
    "cross": (Signature((VEC3, VEC3), VEC3, doc="cross product"),),
    "abs": (Signature((SCALAR,), SCALAR, doc="absolute value"),),
    "sqrt": (Signature((SCALAR,), SCALAR, doc="square root; negative input gives NaN"),),
    "exp": (Signature((SCALAR,), SCALAR, doc="e to the power x"),),
    "log": (Signature((SCALAR,), SCALAR, doc="natural logarithm; x <= 0 gives NaN or -inf"),),
    "clamp": (Signature((SCALAR, SCALAR, SCALAR), SCALAR, doc="clamp(x, lo, hi)"),),
    "min": (_variadic(SCALAR, SCALAR, "smallest of two or more scalars"),),
    "max": (_variadic(SCALAR, SCALAR, "largest of two or more scalars"),),
    "mean": (
        _variadic(VEC3, VEC3, "centroid of two or more points"),
        _variadic(SCALAR, SCALAR, "mean of two or more scalars"),
    ),
    "delta": (
        Signature((SCALAR,), SCALAR, doc="x(t) - x(t-1); 0 at the trajectory's first step"),
        Signature((VEC3,), VEC3, doc="x(t) - x(t-1); zero vector at the first step"),
    ),
}


def resolve_call(func: str, arg_types: tuple[Type, ...]) -> Signature | None:
    """The overload of `func` that accepts `arg_types`, or None."""
    for sig in BUILTINS.get(func, ()):
        if sig.variadic:
            if len(arg_types) >= sig.min_args and all(a == sig.params[0] for a in arg_types):
                return sig
        elif arg_types == sig.params:
            return sig
    return None


def describe(func: str) -> str:
    """Human-readable signatures of `func`, e.g. for a diagnostic: 'dist(vec3, vec3) -> scalar'."""
    out = []
    for sig in BUILTINS.get(func, ()):
        args = f"{sig.params[0]}, {sig.params[0]}, ..." if sig.variadic else ", ".join(sig.params)
        out.append(f"{func}({args}) -> {sig.returns}")
    return " | ".join(out)
