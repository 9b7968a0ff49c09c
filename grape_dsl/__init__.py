"""GRAPE-DSL: the .grc keypoint-constraint language (see docs/language.md).

The public API is imported on first use, so that importing a submodule (the shared helpers in
grape_dsl.util, which the trainer and the simulator use) does not load the parser and compiler.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "parse": "grape_dsl.parser",
    "format_module": "grape_dsl.fmt",
    "format_source": "grape_dsl.fmt",
    "CheckedTask": "grape_dsl.api",
    "check_file": "grape_dsl.api",
    "check_source": "grape_dsl.api",
    "load_task": "grape_dsl.api",
    "compile_task": "grape_dsl.compiler",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'grape_dsl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
