"""Near names for "did you mean" hints: one rule for every unknown-name message.

difflib's ratio at a cutoff of 0.6, plus a case-insensitive match, which difflib undervalues
for short names ('E' for 'e').
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "near_name", "near_names"]

CUTOFF = 0.6


def near_names(name: str, candidates: Iterable[str], limit: int = 1) -> list[str]:
    """Up to `limit` candidates closest to `name` (likely typos), best first; [] when none is close."""
    name = str(name)
    pool = sorted({str(c) for c in candidates} - {name})
    found = difflib.get_close_matches(name, pool, n=limit, cutoff=CUTOFF)
    if len(found) < limit:
        found += [c for c in pool if c.lower() == name.lower() and c not in found][: limit - len(found)]
    return found


def near_name(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `name` (a likely typo), or None when nothing is close."""
    found = near_names(name, candidates)
    return found[0] if found else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """The tail of an "unknown ..." message: "; did you mean 'x'?", or "" when nothing is close."""
    near = near_name(name, candidates)
    return f"; did you mean '{near}'?" if near else ""
