"""Objective files: loading them with their imports, and applying them to a task.

An objective changes a task's constants, never its structure (docs/language.md, "Objective
files"). `apply_objectives` returns a new, fully concrete TaskFile: every constraint carries
numeric `tol` and `weight`, path constraints an `over`, every constraint a `tag`, params their
final values, and exactly one `unreached`. Later passes never look at objectives again.

Each objective file is applied once, at its first appearance in the application order
(imports depth first, then the file itself; several roots left to right). So `safety` and
`efficiency`, which both import `task_completion`, combine as expected instead of the second
import resetting what the first file set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from grape_dsl import ast
from grape_dsl.checker import (
    DEFAULT_OVER,
    DEFAULT_TAG,
    DEFAULT_TOL,
    DEFAULT_UNREACHED,
    DEFAULT_WEIGHT,
    Suggester,
    check,
    constant_value,
)
from grape_dsl.diagnostics import Diagnostic, GrcError

IMPORT_CYCLE = "GRC301"
IMPORT_TOO_DEEP = "GRC309"
# Files on one import chain (an objective importing one importing one ...). The stock
# objectives use 2; the limit keeps loading far from Python's recursion limit.
MAX_IMPORT_DEPTH = 32
MISSING_FILE = "GRC302"
UNKNOWN_SET_PARAM = "GRC303"
OBJECTIVE_PARAM_NOT_IN_TASK = "GRC304"  # warning
TAG_NOT_IN_TASK = "GRC305"  # warning
OBJECTIVE_WHERE_TASK_EXPECTED = "GRC306"
TASK_WHERE_OBJECTIVE_EXPECTED = "GRC307"
INVALID_APPLIED_VALUE = "GRC308"


@dataclass(frozen=True)
class LoadedObjectives:
    """Objective files in application order (each once), the text of every file read, and
    every diagnostic met while reading, parsing and checking them."""

    files: tuple[ast.ObjectiveFile, ...]
    sources: dict[str, str] = field(default_factory=dict)
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")


def read_source_or_diagnostics(path: str) -> tuple[str | None, list[Diagnostic]]:
    """The text of `path`, or None with a diagnostic (missing, unreadable, not UTF-8)."""
    from grape_dsl.source_files import UnreadableSource, read_source_bytes

    try:
        data = read_source_bytes(path)
    except UnreadableSource as exc:
        return None, [Diagnostic(MISSING_FILE, "error", f"cannot read {path!r}: {exc}", _printable(path))]
    except FileNotFoundError:
        return None, [Diagnostic(MISSING_FILE, "error", f"no such file: {path}", path)]
    except OSError as exc:
        return None, [Diagnostic(MISSING_FILE, "error", f"cannot read {path}: {exc.strerror or exc}", path)]
    return _decode(data, path)


def _decode(data: bytes, path: str) -> tuple[str | None, list[Diagnostic]]:
    try:
        from grape_dsl import parser
    except ImportError:  # the parser module is not built yet: decode here
        parser = None
    decode = getattr(parser, "decode_source", None)
    if decode is not None:
        try:
            return decode(data, path), []
        except GrcError as exc:
            return None, list(exc.diagnostics)
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        return None, [Diagnostic("GRC101", "error", f"the file is not valid UTF-8 (byte {exc.start})", path)]


def parse_source(text: str, path: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    """Parse, turning a GrcError into its diagnostics."""
    from grape_dsl.parser import parse  # imported late: the parser imports lark and the grammar

    try:
        return parse(text, path), []
    except GrcError as exc:
        return None, list(exc.diagnostics)


def load_objectives(paths: Sequence[str]) -> LoadedObjectives:
    """Read, parse and check objective files given by path, with their imports."""
    loader = _Loader()
    for path in paths:
        loader.load_path(path, importer=None)
    return loader.result()


def expand_imports(objectives: Sequence[ast.ObjectiveFile]) -> LoadedObjectives:
    """Objective ASTs already in memory plus the files they import, in application order."""
    loader = _Loader()
    for objective in objectives:
        loader.add_module(objective, chain=())
    return loader.result()


class _Loader:
    def __init__(self) -> None:
        self.files: list[ast.ObjectiveFile] = []
        self.sources: dict[str, str] = {}
        self.diagnostics: list[Diagnostic] = []
        self._done: set[str] = set()

    def result(self) -> LoadedObjectives:
        return LoadedObjectives(tuple(self.files), dict(self.sources), tuple(self.diagnostics))

    def load_path(self, path: str, importer: tuple[ast.ImportDecl, str] | None, chain: tuple[str, ...] = ()) -> None:
        key = _key(path)
        if key in self._done:
            return
        text, problems = read_source_or_diagnostics(path)
        if text is None:
            if importer is not None:
                decl, importing_path = importer
                problems = [
                    Diagnostic(
                        MISSING_FILE,
                        "error",
                        f"cannot import '{decl.target}': {problems[0].message}",
                        importing_path,
                        _real(decl.span),
                        hint="import paths are relative to the importing file",
                    )
                ]
            self.diagnostics.extend(problems)
            return
        self.sources[path] = text
        module, problems = parse_source(text, path)
        self.diagnostics.extend(problems)
        if module is None:
            return
        if isinstance(module, ast.TaskFile):
            if importer is not None:
                decl, importing_path = importer
                self.diagnostics.append(
                    Diagnostic(
                        TASK_WHERE_OBJECTIVE_EXPECTED,
                        "error",
                        f"cannot import '{decl.target}': it is a task file (task {module.name}), not an objective file",
                        importing_path,
                        _real(decl.span),
                        expected="an objective file ('objective NAME ...')",
                    )
                )
            else:
                self.diagnostics.append(
                    Diagnostic(
                        TASK_WHERE_OBJECTIVE_EXPECTED,
                        "error",
                        f"{path} is a task file (task {module.name}), but an objective file is expected here",
                        path,
                        _real(module.span),
                        expected="an objective file ('objective NAME ...')",
                    )
                )
            return
        self.diagnostics.extend(check(module).diagnostics)
        self.add_module(module, chain)

    def add_module(self, module: ast.ObjectiveFile, chain: tuple[str, ...]) -> None:
        key = _key(module.path) if _is_file(module.path) else f"<memory:{id(module)}>"
        if key in self._done:
            return
        chain = (*chain, module.path)
        base = os.path.dirname(module.path) if _is_file(module.path) else os.getcwd()
        for decl in module.imports:
            if len(chain) >= MAX_IMPORT_DEPTH:
                self.diagnostics.append(
                    Diagnostic(
                        IMPORT_TOO_DEEP,
                        "error",
                        f"import chain too deep: more than {MAX_IMPORT_DEPTH} files, starting at "
                        f"{os.path.basename(chain[0])}",
                        module.path,
                        _real(decl.span),
                        hint="import the files you need directly",
                    )
                )
                break
            target = os.path.normpath(os.path.join(base, decl.target))
            on_chain = [i for i, p in enumerate(chain) if _is_file(p) and _key(p) == _key(target)]
            if on_chain:
                names = [*chain[on_chain[0] :], target]
                self.diagnostics.append(
                    Diagnostic(
                        IMPORT_CYCLE,
                        "error",
                        "import cycle: " + " -> ".join(os.path.basename(p) for p in names),
                        module.path,
                        _real(decl.span),
                        hint="an objective may not import itself, even indirectly",
                    )
                )
                continue
            self.load_path(target, importer=(decl, module.path), chain=chain)
        self._done.add(key)
        self.files.append(module)


def _is_file(path: str) -> bool:
    return not (path.startswith("<") and path.endswith(">"))


def _key(path: str) -> str:
    if "\0" in path:  # not a path the OS can resolve; read_source reports it
        return path
    return os.path.realpath(path)


def _printable(path: str) -> str:
    """`path` as a diagnostic's file name: a NUL byte would break every later os call on it."""
    return path.replace("\0", "\\0")


def _real(span: ast.Span | None) -> ast.Span | None:
    return None if span is None or span == ast.NO_SPAN else span


# ---------------------------------------------------------------------------- applying


def apply_objectives(
    task: ast.TaskFile,
    objectives: Sequence[ast.ObjectiveFile],
    overrides: Mapping[str, float] | None = None,
) -> tuple[ast.TaskFile, list[Diagnostic]]:
    """A new task with every constant made concrete (see the module docstring).

    `objectives` are applied left to right, each after the files it imports (read from disk
    relative to the objective's path). `overrides` (`--set name=value`) come last; a name the
    task does not declare is an error. Diagnostics of imported files are included.
    """
    loaded = expand_imports(objectives)
    concrete, diagnostics = apply_in_order(task, loaded.files, overrides)
    return concrete, [*loaded.diagnostics, *diagnostics]


def apply_in_order(
    task: ast.TaskFile,
    files: Sequence[ast.ObjectiveFile],
    overrides: Mapping[str, float] | None = None,
) -> tuple[ast.TaskFile, list[Diagnostic]]:
    """`apply_objectives` for files already in application order (`LoadedObjectives.files`):
    each file's own declarations only, no imports read."""
    diagnostics: list[Diagnostic] = []
    suggest = Suggester()
    task_params = {p.name: p for p in task.params}
    task_tags = {c.tag or DEFAULT_TAG for stage in task.stages for c in stage.constraints}

    param_values = {p.name: float(p.value) for p in task.params}
    tag_tol: dict[str, float] = {}
    tag_weight: dict[str, float] = {}
    unreached = task.unreached.value if task.unreached is not None else DEFAULT_UNREACHED
    # Whether the final penalty was written in a file: the checker of that file then reports a
    # bad value itself (GRC224, at its line and column), so applying need not repeat it.
    unreached_written = task.unreached is not None

    for objective in files:
        for decl in objective.decls:
            if isinstance(decl, ast.ParamDecl):
                if decl.name in task_params:
                    param_values[decl.name] = float(decl.value)
                else:
                    diagnostics.append(
                        Diagnostic(
                            OBJECTIVE_PARAM_NOT_IN_TASK,
                            "warning",
                            f"task '{task.name}' has no param '{decl.name}'{suggest(decl.name, task_params, 'params')};"
                            " this setting is ignored for it",
                            objective.path,
                            _real(decl.span),
                        )
                    )
            elif isinstance(decl, ast.TagOverride):
                if decl.tag not in task_tags:
                    diagnostics.append(
                        Diagnostic(
                            TAG_NOT_IN_TASK,
                            "warning",
                            f"no constraint of task '{task.name}' has tag '{decl.tag}'"
                            f"{suggest(decl.tag, task_tags, 'tags')}; this setting changes nothing in it",
                            objective.path,
                            _real(decl.span),
                            expected="one of " + ", ".join(sorted(task_tags)),
                        )
                    )
                if decl.tol is not None:
                    tag_tol[decl.tag] = float(decl.tol)
                if decl.weight is not None:
                    tag_weight[decl.tag] = float(decl.weight)
            elif isinstance(decl, ast.UnreachedDecl):
                unreached = float(decl.value)
                unreached_written = True

    for name, value in (overrides or {}).items():
        if name not in task_params:
            known = ", ".join(sorted(task_params)) or "none"
            diagnostics.append(
                Diagnostic(
                    UNKNOWN_SET_PARAM,
                    "error",
                    f"--set {name}=...: task '{task.name}' has no param '{name}'{suggest(name, task_params, 'params')}",
                    task.path,
                    None,
                    expected=f"a param of the task (declared: {known})",
                )
            )
            continue
        value = float(value)
        if not math.isfinite(value):
            diagnostics.append(
                Diagnostic(
                    INVALID_APPLIED_VALUE, "error", f"--set {name}={value}: a param must be a finite number", task.path
                )
            )
            continue
        param_values[name] = value

    builder = _ConcreteTask(task, param_values, tag_tol, tag_weight, diagnostics)
    concrete = builder.build(unreached, report_invalid=not unreached_written)
    return concrete, diagnostics


class _ConcreteTask:
    def __init__(
        self,
        task: ast.TaskFile,
        params: dict[str, float],
        tag_tol: dict[str, float],
        tag_weight: dict[str, float],
        diagnostics: list[Diagnostic],
    ):
        self.task = task
        self.params = params
        self.tag_tol = tag_tol
        self.tag_weight = tag_weight
        self.diagnostics = diagnostics

    def build(self, unreached: float, report_invalid: bool = True) -> ast.TaskFile:
        decls: list[ast.TaskDecl] = []
        unreached_placed = False
        for decl in self.task.decls:
            if isinstance(decl, ast.ParamDecl):
                decls.append(replace(decl, value=self.params[decl.name]))
            elif isinstance(decl, ast.Stage):
                decls.append(replace(decl, constraints=tuple(self._constraint(c) for c in decl.constraints)))
            elif isinstance(decl, ast.UnreachedDecl):
                if not unreached_placed:
                    decls.append(replace(decl, value=unreached))
                    unreached_placed = True
            else:
                decls.append(decl)
        if not unreached_placed:
            decls.append(ast.UnreachedDecl(unreached))
        if report_invalid and (not math.isfinite(unreached) or unreached < 0):
            self.diagnostics.append(
                Diagnostic(
                    INVALID_APPLIED_VALUE,
                    "error",
                    f"the unreached-stage penalty becomes {unreached:g}; it must be >= 0",
                    self.task.path,
                )
            )
        return replace(self.task, decls=tuple(decls))

    def _constraint(self, constraint: ast.Constraint) -> ast.Constraint:
        tag = constraint.tag or DEFAULT_TAG
        tol = self._attribute(constraint, "tol", constraint.tol, self.tag_tol.get(tag), DEFAULT_TOL)
        weight = self._attribute(constraint, "weight", constraint.weight, self.tag_weight.get(tag), DEFAULT_WEIGHT)
        over = constraint.over
        if constraint.kind == "path" and over is None:
            over = DEFAULT_OVER
        return replace(constraint, tol=tol, weight=weight, over=over, tag=tag)

    def _attribute(
        self, constraint: ast.Constraint, label: str, expr: ast.Expr | None, by_tag: float | None, default: float
    ) -> ast.Number:
        span = expr.span if expr is not None else constraint.span
        if by_tag is not None:
            value = by_tag
        elif expr is None:
            value = default
        else:
            found = constant_value(expr, self.params)
            if found is None:  # not constant: the checker reports it; keep the default meanwhile
                found = default
            value = found
        if not math.isfinite(value) or value < 0:
            self.diagnostics.append(
                Diagnostic(
                    INVALID_APPLIED_VALUE,
                    "error",
                    f"the {label} of '{constraint.name}' becomes {value:g} once objectives and --set are applied;"
                    f" it must be a finite number >= 0",
                    self.task.path,
                    _real(span),
                )
            )
        return ast.Number(value, span)
