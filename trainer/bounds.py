"""Declarative range checks for numeric settings: every number finite, every number in range.

A setting's range is declared once, next to the setting: in a dataclass field's metadata
(`field(default=..., metadata={"bounds": Bound(low=1)})`) or in a table keyed by field name.
A numeric setting that declares nothing still gets the default rule, finite and >= 0, so a
field added later is never left unchecked: NaN, inf and negative values are refused unless
the field says it accepts them.

The checks run on plain values before any file is written or model loaded; each problem is
one line naming the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

UNBOUNDED = None


@dataclass(frozen=True)
class Bound:
    """The values a numeric setting accepts: finite, and within [low, high] (or open ends)."""

    low: float | None = 0
    high: float | None = UNBOUNDED
    low_open: bool = False
    """True: the value must be > low (not >= low)."""
    high_open: bool = False
    note: str = ""
    """Why the range is what it is, appended to the message (e.g. 'to form pairs')."""

    def problem(self, flag: str, value: Any) -> str | None:
        """One line describing why `value` is refused, or None when it is fine."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        suffix = f" {self.note}" if self.note else ""
        if isinstance(value, float) and not math.isfinite(value):
            return f"{flag} must be a finite number, got {value}"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not (too_low or too_high):
            return None
        if too_low and (self.high is None or self.high > 1e6):  # a far upper end says nothing here
            return f"{flag} must be {'>' if self.low_open else '>='} {_number(self.low)}{suffix}, got {value}"
        if too_high and (self.low is None or self.high > 1e6):
            return f"{flag} must be {'<' if self.high_open else '<='} {_number(self.high)}{suffix}, got {value}"
        interval = (
            f"{'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}{')' if self.high_open else ']'}"
        )
        return f"{flag} must lie in {interval}{suffix}, got {value}"


DEFAULT_BOUND = Bound(low=0)
"""What an undeclared numeric setting accepts: a finite number >= 0."""
POSITIVE = Bound(low=0, low_open=True)
AT_LEAST_ONE = Bound(low=1)
SEED = Bound(low=0, high=2**63 - 1)
"""Seeds reach torch.manual_seed and numpy's SeedSequence: non-negative, within int64."""


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def dashed_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def dataclass_problems(
    obj: Any,
    bounds: Mapping[str, Bound] = {},
    flag_of: Callable[[dataclasses.Field], str] | None = None,
) -> list[str]:
    """Range problems of every numeric field of dataclass `obj` (nested dataclasses included).

    A field's bound is its metadata's "bounds", else `bounds[name]`, else DEFAULT_BOUND; its flag
    is `flag_of(field)`, by default the metadata's "flag" or the name with dashes.
    """

    def default_flag(f: dataclasses.Field) -> str:
        return f.metadata.get("flag", dashed_flag(f.name))

    flag_of = flag_of or default_flag
    problems = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            problems += dataclass_problems(value, bounds, flag_of)
            continue
        bound = f.metadata.get("bounds") or bounds.get(f.name, DEFAULT_BOUND)
        for item in _values(value):
            problem = bound.problem(flag_of(f), item)
            if problem:
                problems.append(problem)
                break
    return problems


def namespace_problems(
    args: argparse.Namespace | Mapping[str, Any], bounds: Mapping[str, Bound] = {}, flags: Mapping[str, str] = {}
) -> list[str]:
    """Range problems of every numeric value of parsed flags (argparse dests -> values).

    As for dataclasses, a flag without a declared bound must be a finite number >= 0.
    """
    values = vars(args) if isinstance(args, argparse.Namespace) else args
    problems = []
    for name, value in values.items():
        bound = bounds.get(name, DEFAULT_BOUND)
        for item in _values(value):
            problem = bound.problem(flags.get(name, dashed_flag(name)), item)
            if problem:
                problems.append(problem)
                break
    return problems
