"""Recipes: what rebuilds a reduced network without pickling a module.

A recipe names the base model (``ModelSpec``), the ReLU plan, and the ordered structural
transforms that turned the plan-applied model into the exported one. Replaying them on a fresh
model gives the exported structure; its ``model.pt`` state_dict then supplies the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relucut.errors import RelucutError
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan, atomic_write_text

RECIPE_FORMAT = "relucut.recipe"
RECIPE_VERSION = 1
RECIPE_FILE = "recipe.json"
TRANSFORM_OPS = ("drop_modules", "drop_sites", "partial_sites", "fold_bn", "merge_chain", "merge_residual")


@dataclass
class Recipe:
    model: ModelSpec
    plan: ReLUPlan
    transforms: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)  # counts of the plan-applied model
    after: dict[str, Any] = field(default_factory=dict)  # counts of the exported model
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RECIPE_FORMAT,
            "version": RECIPE_VERSION,
            "model": self.model.to_dict(),
            "plan": self.plan.to_dict(),
            "transforms": self.transforms,
            "relus": self.after.get("relus"),
            "before": self.before,
            "after": self.after,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        if not isinstance(data, dict) or data.get("format") != RECIPE_FORMAT:
            raise RelucutError('not a relucut recipe (missing "format": "relucut.recipe"); make one with relucut export')
        if data.get("version") != RECIPE_VERSION:
            raise RelucutError(
                f"recipe format version {data.get('version')} is not supported (this relucut reads {RECIPE_VERSION})"
            )
        try:
            model = ModelSpec.from_dict(dict(data["model"]))
            transforms = [dict(t) for t in data["transforms"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise RelucutError(f"corrupt recipe: {exc.__class__.__name__}: {exc}") from None
        for t in transforms:
            if t.get("op") not in TRANSFORM_OPS:
                raise RelucutError(f"corrupt recipe: unknown transform {t.get('op')!r}")
        return cls(model, ReLUPlan.from_dict(data.get("plan")), transforms,
                   dict(data.get("before") or {}), dict(data.get("after") or {}), dict(data.get("meta") or {}))

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if path.is_dir():
            path = path / RECIPE_FILE
        if not path.is_file():
            raise RelucutError(f"no recipe at '{path}'; point at a directory written by 'relucut export'")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise RelucutError(f"{path}: corrupt recipe JSON: {exc}") from None
        except RelucutError as exc:
            raise RelucutError(f"{path}: {exc}") from None


def is_export_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / RECIPE_FILE).is_file()
