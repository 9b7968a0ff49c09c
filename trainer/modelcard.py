"""A model card (README.md with YAML front matter) for a saved checkpoint: what it was trained
from, on what, scored by which objective files (with their sha256), and its metrics."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CARD_FILE = "README.md"


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read (moved since training)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def objective_files(constraints: str, tasks: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """The .grc files a run's --constraints read: the file and, recursively, its imports; for an
    objective file also each task's stock task file it was applied to (as the loop resolves them)."""
    from grape_dsl import ast, parse
    from grape_dsl.diagnostics import GrcError

    seen: list[Path] = []
    pending = [Path(constraints)]
    while pending:
        path = pending.pop(0)
        if path in seen:
            continue
        seen.append(path)
        try:
            module = parse(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError, GrcError):
            continue
        if isinstance(module, ast.ObjectiveFile):
            pending += [path.parent / item.target for item in module.imports]
            if path == seen[0]:
                from trainer.loop import stock_task_dir

                task_dir = stock_task_dir(path)
                pending += [task_dir / f"{task}.grc" for task in tasks if (task_dir / f"{task}.grc").is_file()]
    return seen


def render_card(
    *,
    title: str,
    base_policy: str | None,
    tasks: list[str],
    constraints: str | None,
    iteration: int,
    metrics: dict[str, Any],
    settings: dict[str, Any],
) -> str:
    """The card's text: front matter a model hub reads, then the same facts for people."""
    files = objective_files(constraints, tasks) if constraints else []
    hashes = {str(path): file_sha256(path) for path in files}
    front = {
        "library_name": "grape-dsl",
        "tags": ["robotics", "vla", "grape", "preference-alignment"],
        "base_model": base_policy,
        "pipeline_tag": "robotics",
    }
    lines = [
        "---",
        *(f"{key}: {json.dumps(value)}" for key, value in front.items()),
        "---",
        "",
        f"# {title}",
        "",
        "A vision-language-action policy aligned with GRAPE (trajectory-wise preference optimisation, "
        "costs from `.grc` keypoint constraints).",
        "",
        f"- base policy: `{base_policy or 'the default SFT policy'}`",
        f"- tasks: {', '.join(f'`{t}`' for t in tasks)}",
        f"- iteration: {iteration}",
        "",
        "## Constraint files (objective, imports, task files)",
        "",
    ]
    lines += [f"- `{path}` sha256 `{digest or 'unreadable'}`" for path, digest in hashes.items()] or ["- none"]
    lines += ["", "## Metrics (the iteration's rollouts)", "", "| metric | value |", "| --- | --- |"]
    lines += [
        f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
        for name, value in sorted(metrics.items())
    ]
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)
