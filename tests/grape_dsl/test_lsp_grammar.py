"""editors/vscode: the TextMate grammar knows the language's words and colours the stock files."""

from __future__ import annotations

import json
import re
from pathlib import Path

from grape_dsl.builtins import BUILTINS
from grape_dsl.checker import KEYWORDS

VSCODE = Path(__file__).resolve().parents[2] / "editors" / "vscode"
GRAMMAR = json.loads((VSCODE / "grc.tmLanguage.json").read_text())
STOCK = sorted((VSCODE.parents[1] / "constraints").rglob("*.grc"))


def _rules(node: dict) -> list[dict]:
    """The grammar's top-level rules in order, includes resolved."""
    out = []
    for pattern in node["patterns"]:
        if "include" in pattern:
            out += _rules({"patterns": [GRAMMAR["repository"][pattern["include"][1:]]]})
        elif "patterns" in pattern and "match" not in pattern and "begin" not in pattern:
            out += _rules(pattern)
        else:
            out.append(pattern)
    return out


RULES = _rules(GRAMMAR)


def scopes(line: str) -> list[tuple[str, str]]:
    """(text, scope) per matched piece of one line, scanning as TextMate does: at each point
    the rule matching earliest wins, ties going to the rule listed first."""
    out, at = [], 0
    while at < len(line):
        best = None
        for rule in RULES:
            found = re.compile(rule.get("match") or rule["begin"]).search(line, at)
            if found and found.end() > found.start() and (best is None or found.start() < best[1].start()):
                best = (rule, found)
        if best is None:
            break
        rule, found = best
        end = found.end()
        if "begin" in rule:
            closing = re.compile(rule["end"]).search(line, end)
            end = closing.end() if closing else len(line)
        if "name" in rule:
            out.append((line[found.start() : end], rule["name"]))
        for group, capture in rule.get("captures", {}).items():
            if found.group(int(group)):
                out.append((found.group(int(group)), capture["name"]))
        at = end
    return out


def test_every_keyword_and_builtin_is_in_the_grammar():
    words = set()
    for rule in RULES:
        for pattern in (rule.get("match", ""), rule.get("begin", "")):
            for group in re.findall(r"\\b\(([a-z_|]+)\)", pattern):
                words.update(group.split("|"))
    assert KEYWORDS <= words, sorted(KEYWORDS - words)
    call = GRAMMAR["repository"]["call"]["match"]
    assert set(re.search(r"\(([a-z_|]+)\)", call).group(1).split("|")) == set(BUILTINS)


def test_the_stock_files_are_coloured():
    seen: dict[str, set[str]] = {}
    for path in STOCK:
        for line in path.read_text().splitlines():
            for text, scope in scopes(line):
                seen.setdefault(scope, set()).add(text)
            if line.lstrip().startswith("#"):
                assert scopes(line)[0][1].startswith("comment"), line  # a keyword in a comment stays comment
    assert {"grasp", "transport", "place"} <= seen["entity.name.section.grc"]
    assert {"dist", "norm", "delta", "dist_xy"} <= seen["support.function.builtin.grc"]
    assert {"reach", "bump", "inside"} <= seen["entity.name.function.constraint.grc"]
    assert {"collision", "path", "task"} <= seen["entity.name.tag.grc"]
    assert {"0.03", "60", "10"} <= seen["constant.numeric.grc"]
    assert {"and", "not"} & seen["keyword.operator.logical.grc"]
    assert {"keypoints", "signals", "import"} <= seen["storage.type.grc"]
    assert "z" in seen["variable.other.property.grc"]
