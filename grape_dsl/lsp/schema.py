"""Which environment names a .grc file may bind to, for the language server.

A task file named after a stock task (`task pick_place`) gets that task's keypoints and
signals from grape_dsl/data/env_schema.json; a scene file (`grapec lsp --scene FILE` or the
`grapec.scene` client setting, same format as `grapec generate --scene`) replaces that for
one's own environment and applies to every task file. Anything else is checked without a
schema, exactly like `grapec check`.
"""

from __future__ import annotations

from dataclasses import dataclass

from grape_dsl import llm


@dataclass(frozen=True)
class SchemaChoice:
    schema: llm.Schema | None
    origin: str  # "stock task pick_place", "scene FILE", or "none"


class SchemaSource:
    """Stock task schemas (read once) and an optional scene file (read when set)."""

    def __init__(self) -> None:
        self._stock: dict[str, llm.Schema] = {name: llm.builtin_schema(name) for name in llm.builtin_task_names()}
        self.scene: llm.Schema | None = None
        self.scene_path: str | None = None

    def set_scene(self, path: str | None) -> str | None:
        """Use the scene file at `path` (None: no scene). Returns the problem, if the file
        cannot be used; the previous scene is then dropped, so no stale names are checked."""
        self.scene, self.scene_path = None, None
        if not path:
            return None
        try:
            self.scene = llm.load_scene(path)
        except llm.InputError as problem:
            return str(problem)
        self.scene_path = path
        return None

    def for_task(self, task_name: str | None) -> SchemaChoice:
        if self.scene is not None:
            return SchemaChoice(self.scene, f"scene {self.scene_path}")
        if task_name in self._stock:
            return SchemaChoice(self._stock[task_name], f"stock task {task_name}")
        return SchemaChoice(None, "none")

    def all_names(self) -> tuple[dict[str, str], dict[str, str]]:
        """Every keypoint and signal meaning known (for hover outside a known task)."""
        keypoints: dict[str, str] = {}
        signals: dict[str, str] = {}
        for schema in ([self.scene] if self.scene else []) + list(self._stock.values()):
            keypoints.update({k: v for k, v in schema.keypoints.items() if k not in keypoints})
            signals.update({k: v for k, v in schema.signals.items() if k not in signals})
        return keypoints, signals
