"""How long the .grc front end takes, for valid files of growing size and for hostile input.

Run: python bench/parser.py [--repeat N]

Prints seconds per parse (best of N) and the time per kB relative to the stock file, so the
ratios show whether parsing stays linear up to the size limit; then how long hostile inputs
(a 10 MB file, 10k nested parentheses, a long operator chain, many errors) take to end in a
diagnostic.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from lark import Lark

from grape_dsl.diagnostics import GrcError
from grape_dsl.fmt import format_source
from grape_dsl.parser import _START_RULES, MAX_SOURCE_CHARS, _gc_paused, _lark, grammar_text, parse

ROOT = Path(__file__).resolve().parents[1]
STOCK = (ROOT / "constraints" / "tasks" / "pick_place.grc").read_text(encoding="utf-8")


def grown(target_chars: int) -> str:
    """The stock file with its stages repeated (renamed) until it reaches `target_chars`."""
    head, first_stage, rest = STOCK.partition("\nstage ")
    stages = first_stage + rest
    out, n = [head], 0
    while sum(map(len, out)) < target_chars:
        out.append(
            stages.replace("stage grasp", f"stage grasp{n}")
            .replace("stage transport", f"stage transport{n}")
            .replace("stage place", f"stage place{n}")
        )
        n += 1
    return "".join(out)


def with_spread_errors(text: str, count: int) -> str:
    """`text` with `count` bad characters at evenly spaced constraints."""
    lines = text.split("\n")
    constraint_lines = [i for i, line in enumerate(lines) if line.lstrip().startswith(("subgoal ", "path "))]
    for i in constraint_lines[:: max(1, len(constraint_lines) // count)][:count]:
        lines[i] = lines[i].replace(":", ": @", 1)
    return "\n".join(lines)


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def parse_or_diagnose(text: str) -> str:
    try:
        parse(text, "bench.grc")
        return "ok"
    except GrcError as err:
        codes = sorted({d.code for d in err.diagnostics})
        return f"{len(err.diagnostics)} x {','.join(codes)}"


def table_build_vs_cache(repeat: int) -> tuple[float, float]:
    """Seconds to build the LALR tables (strict check included) vs to load them from Lark's cache."""
    options = dict(
        parser="lalr",
        lexer="basic",
        strict=True,
        propagate_positions=True,
        maybe_placeholders=False,
        start=_START_RULES,
    )
    grammar = grammar_text()
    build = best_of(repeat, lambda: Lark(grammar, **options))
    with tempfile.TemporaryDirectory() as folder:
        cache = f"{folder}/grc.cache"
        Lark(grammar, cache=cache, **options)  # writes the cache
        load = best_of(repeat, lambda: Lark(grammar, cache=cache, **options))
    return build, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    parse(STOCK)  # build the LALR tables once, outside the timings

    print(f"{'valid input':<34}{'chars':>10}{'parse s':>10}{'fmt s':>10}{'us/char':>10}{'vs stock':>10}")
    base = None
    for size in (len(STOCK), 20_000, MAX_SOURCE_CHARS - 10_000):
        text = STOCK if size == len(STOCK) else grown(size)
        seconds = best_of(args.repeat, lambda: parse(text))
        fmt_seconds = best_of(args.repeat, lambda: format_source(text))
        per_char = seconds / len(text) * 1e6
        base = base or per_char
        print(
            f"{'stock pick_place x' + str(round(len(text) / len(STOCK))):<34}{len(text):>10,}{seconds:>10.3f}"
            f"{fmt_seconds:>10.3f}{per_char:>10.2f}{per_char / base:>9.2f}x"
        )

    text = grown(MAX_SOURCE_CHARS - 10_000)
    gc.collect()
    with_gc = best_of(args.repeat, lambda: _lark().parse(text, start="start"))

    def paused() -> None:
        with _gc_paused():
            _lark().parse(text, start="start")

    without_gc = best_of(args.repeat, paused)
    print(
        f"\nLark parse of {len(text):,} chars: GC on {with_gc:.3f} s, GC paused {without_gc:.3f} s "
        f"({with_gc / without_gc:.2f}x)"
    )

    build, load = table_build_vs_cache(args.repeat)
    print(f"LALR tables: built {build:.3f} s, loaded from cache {load:.4f} s ({build / load:.0f}x)")

    hostile = {
        "10 MB file": "task a\n" + "let x = 1 + 2\n" * (10 * 1024 * 1024 // 14),
        "10k nested parentheses": "task a\nlet x = " + "(" * 10_000 + "1" + ")" * 10_000,
        "10k unclosed parentheses": "task a\nlet x = " + "(" * 10_000,
        "10k-term sum": "task a\nlet x = " + " + ".join(["t"] * 10_000),
        "10 errors spread over 190 kB": with_spread_errors(grown(MAX_SOURCE_CHARS - 10_000), 10),
    }
    print(f"\n{'hostile input':<34}{'chars':>12}{'seconds':>10}  diagnostics")
    for name, text in hostile.items():
        outcome = []
        seconds = best_of(args.repeat, lambda: outcome.append(parse_or_diagnose(text)))
        print(f"{name:<34}{len(text):>12,}{seconds:>10.3f}  {outcome[-1]}")


if __name__ == "__main__":
    main()
