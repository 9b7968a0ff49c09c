"""Robustness: mangled input never gives a traceback, only diagnostics, in bounded time.

Seeds are the examples in docs/language.md and every constraints/**/*.grc file. Mutations:
deleted, duplicated and swapped tokens, truncation, random bytes, invalid UTF-8, a 10 MB
file, deep nesting. Many go through the in-process API (parse, check_source, fmt); a handful
through the real `grapec check` in a subprocess, which must exit 1 with diagnostics.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grape_dsl.commands.check import check_text
from grape_dsl.diagnostics import Diagnostic, GrcError, render
from grape_dsl.fmt import format_source
from grape_dsl.parser import _lark, decode_source, parse

ROOT = Path(__file__).resolve().parents[2]
GRAPEC = Path(sys.executable).parent / "grapec"
TOKEN = re.compile(r'#[^\n]*|"(?:\\.|[^"\\\n])*"|[A-Za-z_]\w*|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|<=|>=|==|!=|\s+|.')


def _seeds() -> list[tuple[str, str]]:
    doc = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    seeds = [(f"doc_example_{i}.grc", text) for i, text in enumerate(re.findall(r"```grc\n(.*?)```", doc, re.S))]
    for path in sorted((ROOT / "constraints").glob("**/*.grc")):
        seeds.append((str(path), path.read_text(encoding="utf-8")))
    return seeds


SEEDS = _seeds()
LARK_NAMES = {t.name for t in _lark().terminals} - {"NAME"} | {"$END"}  # `task NAME` is our notation


def mutate(text: str, rng: random.Random) -> str | bytes:
    """One random corruption of a source text."""
    tokens = [t for t in TOKEN.findall(text)]
    significant = [i for i, t in enumerate(tokens) if not t.isspace()]
    kind = rng.choice(["delete", "duplicate", "swap", "truncate", "bytes", "utf8", "char", "several"])
    i = rng.choice(significant)
    if kind == "delete":
        del tokens[i]
    elif kind == "duplicate":
        tokens.insert(i, tokens[i])
    elif kind == "swap":
        j = rng.choice(significant)
        tokens[i], tokens[j] = tokens[j], tokens[i]
    elif kind == "truncate":
        return text[: rng.randrange(len(text))]
    elif kind == "bytes":
        pos = rng.randrange(len(text))
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return text[:pos].encode() + junk + text[pos:].encode()
    elif kind == "utf8":
        data = bytearray(text.encode())
        data[rng.randrange(len(data))] = rng.choice([0x80, 0xC3, 0xFF, 0xED, 0xF8])
        return bytes(data)
    elif kind == "char":
        tokens[i] = chr(rng.choice([0, 7, 0x7F, 0x2264, 0x200B, 0xFEFF, rng.randrange(0x20, 0x3000)]))
    else:
        for _ in range(rng.randint(2, 6)):
            j = rng.choice(range(len(tokens)))
            tokens[j] = rng.choice(["", "{", "}", "(", ")", "stage", "tag", ":", "=", ";", "\n", "- -", tokens[j] * 2])
    return "".join(tokens)


def assert_well_formed(diagnostics: list[Diagnostic], text: str, path: str) -> None:
    """Codes, severities and messages present; spans inside the file they name; renderable."""
    line_count = text.count("\n") + 1
    for diag in diagnostics:
        assert re.fullmatch(r"GRC\d{3}", diag.code), diag
        assert diag.severity in ("error", "warning")
        assert diag.message
        if diag.code.startswith("GRC1"):  # plain words, never Lark's terminal names
            words = diag.message + " " + (diag.expected or "")
            assert not set(re.findall(r"[\w$]+", words)) & LARK_NAMES, diag
        if diag.path == path and diag.span is not None:  # (an import's diagnostic names its own file)
            assert 1 <= diag.span.line <= line_count and diag.span.column >= 1, diag
            render(diag, text)


def run_api(source: str | bytes, path: str) -> list[Diagnostic]:
    """The in-process front end as the CLI drives it; only GrcError is an acceptable raise."""
    try:
        text = decode_source(source, path) if isinstance(source, bytes) else source
    except GrcError as err:
        assert [d.code for d in err.diagnostics] == ["GRC105"]
        return err.diagnostics
    diagnostics = check_text(text, path)
    assert_well_formed(diagnostics, text, path)
    try:
        formatted = format_source(text, path)
    except GrcError as err:
        assert any(d.severity == "error" for d in diagnostics)
        assert err.diagnostics
        return diagnostics
    assert format_source(formatted, path) == formatted
    assert parse(formatted, path) == parse(text, path)
    return diagnostics


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("path", "text"), SEEDS, ids=[Path(p).name for p, _ in SEEDS])
def test_random_mutations_in_process(path: str, text: str) -> None:
    rng = random.Random(f"grc-robustness:{Path(path).name}")
    errors = 0
    for _ in range(120):
        diagnostics = run_api(mutate(text, rng), path)
        errors += any(d.severity == "error" for d in diagnostics)
    assert errors > 60  # almost every mutation breaks the file: the test exercises errors


SOUP_WORDS = [
    "subgoal ",
    "path ",
    "stage ",
    "until ",
    "tag ",
    "over ",
    "sum",
    "let ",
    "param ",
    "keypoints",
    "signals",
    "not ",
    " and ",
    " or ",
    "dist(",
    "vec(",
    "mean(",
    "true",
    "1e999",
    "obj",
    "t",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list('{}()<=>!.:;#"\\ \n\tax01.5e-9_') + SOUP_WORDS), max_size=80).map("".join))
def test_arbitrary_token_soup(text: str) -> None:
    run_api("task t\n" + text, "soup.grc")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    run_api(data, "bytes.grc")


DEEP = {
    "parens": "task a\nlet x = " + "(" * 10_000 + "1" + ")" * 10_000 + "\n",
    "unclosed_parens": "task a\nlet x = " + "(" * 10_000 + "\n",
    "negations": "task a\nlet x = " + "-" * 10_000 + "1\n",
    "nots": "task a\nlet x = " + "not " * 10_000 + "true\n",
    "calls": "task a\nlet x = " + "abs(" * 10_000 + "1" + ")" * 10_000 + "\n",
    "components": "task a\nlet x = v" + ".x" * 10_000 + "\n",
    "long_sum": "task a\nlet x = " + " + ".join(["t"] * 10_000) + "\n",
    "braces": "task a\nstage s " + "{" * 10_000 + "\n",
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(DEEP))
def test_deep_nesting_is_a_diagnostic(name: str) -> None:
    diagnostics = run_api(DEEP[name], f"{name}.grc")
    assert diagnostics and diagnostics[0].severity == "error"
    assert diagnostics[0].code in ("GRC106", "GRC103", "GRC102")


def test_ten_megabytes_is_a_diagnostic() -> None:
    big = "task a\n" + "let x = 1 + 2\n" * (10 * 1024 * 1024 // 14)
    diagnostics = run_api(big, "big.grc")
    assert [(d.code, d.span.line, d.span.column) for d in diagnostics] == [("GRC100", 1, 1)]


# ---------------------------------------------------------------------------- the real CLI


def _cli_cases(tmp: Path) -> dict[str, bytes]:
    stock = (ROOT / "constraints" / "tasks" / "pick_place.grc").read_bytes()
    first_brace = stock.index(b"{", stock.index(b"\nstage ")) + 1
    rng = random.Random(7)
    return {
        "ten_mb": b"task a\n" + b"let x = 1 + 2\n" * (10 * 1024 * 1024 // 14),
        "deep_parens": b"task a\nlet x = " + b"(" * 10_000 + b"1" + b")" * 10_000,
        "invalid_utf8": stock[:200] + b"\xff\xfe" + stock[200:],
        "random_bytes": bytes(rng.randrange(256) for _ in range(4096)),
        "truncated_in_stage": stock[:first_brace],
        "nul_byte": stock.replace(b"stage", b"st\x00age", 1),
    }


@pytest.mark.timeout(300)
def test_grapec_check_subprocess_on_mangled_files(tmp_path: Path) -> None:
    cases = _cli_cases(tmp_path)
    for name, data in cases.items():
        (tmp_path / f"{name}.grc").write_bytes(data)
    for name in cases:
        done = subprocess.run([str(GRAPEC), "check", f"{name}.grc"], cwd=tmp_path, capture_output=True, timeout=60)
        err = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 1, (name, err)
        assert f"{name}.grc:" in err and "error[GRC" in err, (name, err)
        assert "Traceback" not in err, (name, err)
    fmt_run = subprocess.run(
        [str(GRAPEC), "fmt", *(f"{n}.grc" for n in cases)], cwd=tmp_path, capture_output=True, timeout=120
    )
    assert fmt_run.returncode == 1
    assert b"Traceback" not in fmt_run.stderr
    for name, data in cases.items():  # a file with errors is never rewritten
        assert (tmp_path / f"{name}.grc").read_bytes() == data
    json_run = subprocess.run(
        [str(GRAPEC), "check", "--json", *(f"{n}.grc" for n in cases)], cwd=tmp_path, capture_output=True, timeout=120
    )
    assert json_run.returncode == 1
    assert b"Traceback" not in json_run.stderr
