"""The front end's public entry points: check a file, or load a task ready to compile."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from grape_dsl import ast
from grape_dsl.builtins import Type
from grape_dsl.checker import Schema, check
from grape_dsl.diagnostics import Diagnostic, GrcError
from grape_dsl.objective import (
    OBJECTIVE_WHERE_TASK_EXPECTED,
    LoadedObjectives,
    apply_in_order,
    expand_imports,
    load_objectives,
    parse_source,
    read_source_or_diagnostics,
)


@dataclass(frozen=True)
class CheckedTask:
    """A task with its objectives and `--set` overrides applied, ready to lower.

    task: every constraint has numeric tol/weight, a tag, an `over` for paths; params hold
    their final values; exactly one `unreached`. types/kinds: every keypoint, signal, param
    and let. source_hash: sha256 over every input (task text, objective texts with imports,
    overrides), the compiler's cache key. warnings: what the checker and objectives noted.
    sources: path -> text of every file read, for rendering diagnostics.
    """

    task: ast.TaskFile
    types: dict[str, Type]
    kinds: dict[str, str]
    source_hash: str
    warnings: tuple[Diagnostic, ...] = ()
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


def check_source(text: str, path: str = "<string>", *, schema: Schema | None = None) -> list[Diagnostic]:
    """Every diagnostic of one file: syntax, then semantics; an objective file's imports are
    read relative to `path` and checked too."""
    module, diagnostics = parse_source(text, path)
    if module is None:
        return diagnostics
    if isinstance(module, ast.ObjectiveFile):
        own = list(check(module).diagnostics)
        return own + _sorted(expand_imports([module]).diagnostics)
    return list(check(module, schema=schema).diagnostics)


def check_file(path: str, *, schema: Schema | None = None) -> list[Diagnostic]:
    """`check_source` on a file read from disk (a missing or undecodable file is a diagnostic)."""
    text, problems = read_source_or_diagnostics(path)
    if text is None:
        return problems
    return check_source(text, path, schema=schema)


def load_task(
    task_path: str,
    objective_paths: Sequence[str] = (),
    overrides: Mapping[str, float] | None = None,
    *,
    schema: Schema | None = None,
) -> CheckedTask:
    """Read, parse and check a task file, apply objectives left to right then `overrides`.

    Raises GrcError carrying every error found (in the task, in the objectives and their
    imports, and in applying them) together with the sources read.
    """
    overrides = dict(overrides or {})
    sources: dict[str, str] = {}
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []

    text, problems = read_source_or_diagnostics(task_path)
    task: ast.TaskFile | None = None
    if text is None:
        errors.extend(problems)
    else:
        sources[task_path] = text
        module, problems = parse_source(text, task_path)
        errors.extend(problems)
        if isinstance(module, ast.ObjectiveFile):
            errors.append(
                Diagnostic(
                    OBJECTIVE_WHERE_TASK_EXPECTED,
                    "error",
                    f"{task_path} is an objective file (objective {module.name}), but a task file is expected here",
                    task_path,
                    module.span if module.span != ast.NO_SPAN else None,
                    expected="a task file ('task NAME ...'); pass objectives with --objective",
                )
            )
        elif isinstance(module, ast.TaskFile):
            task = module
            _split(check(module, schema=schema).diagnostics, errors, warnings)

    loaded: LoadedObjectives = load_objectives(objective_paths)
    sources.update(loaded.sources)
    _split(loaded.diagnostics, errors, warnings)

    if task is None:
        raise GrcError(_sorted(errors), sources)
    # Applied even when something is already wrong, so that a bad `--set` or an objective
    # naming what the task lacks is reported in the same run.
    concrete, applied = apply_in_order(task, loaded.files, overrides)
    _split(applied, errors, warnings)
    if errors:
        raise GrcError(_sorted(errors), sources)
    result = check(concrete, schema=schema)
    if result.errors:  # applying objectives cannot add type errors; guard the invariant anyway
        raise GrcError(list(result.errors), sources)
    return CheckedTask(
        task=concrete,
        types=dict(result.types),
        kinds=dict(result.kinds),
        source_hash=_source_hash(task_path, loaded, sources, overrides),
        warnings=tuple(_dedupe(warnings)),
        sources=sources,
    )


def _source_hash(
    task_path: str, loaded: LoadedObjectives, sources: dict[str, str], overrides: Mapping[str, float]
) -> str:
    digest = hashlib.sha256()
    # Lengths delimit the texts, so moving text from one file to the next changes the hash.
    texts = [sources[task_path]] + [sources[f.path] for f in loaded.files if f.path in sources]
    for text in texts:
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    digest.update(json.dumps(sorted((k, float(v)) for k, v in overrides.items())).encode())
    return digest.hexdigest()


def _split(diagnostics: Sequence[Diagnostic], errors: list[Diagnostic], warnings: list[Diagnostic]) -> None:
    for diagnostic in diagnostics:
        (errors if diagnostic.severity == "error" else warnings).append(diagnostic)


def _dedupe(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[Diagnostic] = set()
    out = []
    for diagnostic in diagnostics:
        if diagnostic not in seen:
            seen.add(diagnostic)
            out.append(diagnostic)
    return out


def _sorted(diagnostics: Sequence[Diagnostic]) -> list[Diagnostic]:
    """Grouped by file in first-seen order, then by position."""
    order: dict[str, int] = {}
    for diagnostic in diagnostics:
        order.setdefault(diagnostic.path, len(order))
    return sorted(
        diagnostics, key=lambda d: (order[d.path], d.span.line if d.span else 0, d.span.column if d.span else 0)
    )
