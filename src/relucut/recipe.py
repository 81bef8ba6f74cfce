"""Recipes: what rebuilds a reduced network without pickling a module.

A recipe names the base model (``ModelSpec``), the ordered ``structure`` ops that change the
fresh model's architecture before anything else (a block replaced by its shallow form, an
auxiliary exit), the ReLU plan, and the ordered ``transforms`` that turned the plan-applied model
into the exported one. Rebuilding is spec -> structure -> plan -> transforms; the ``model.pt``
state_dict then supplies the weights.

Version 2 added ``structure``; a version-1 recipe reads as one with no structure ops.
``files`` records the sha256 of every other file of the export (``model.pt``, ``model.onnx``, ...):
an export is intact when each matches (:func:`relucut.export.verify_export`); exports written
before it record none.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relucut.errors import RelucutError
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan
from relucut.rundir import atomic_write_text, json_text

RECIPE_FORMAT = "relucut.recipe"
RECIPE_VERSION = 2
OLD_FINEGRAINED_FORMAT = "relucut.finegrained.recipe"  # shallow/AC exports before version 2; not replayable
READABLE_VERSIONS = (1, 2)
RECIPE_FILE = "recipe.json"
TRANSFORM_OPS = ("drop_modules", "drop_sites", "partial_sites", "fold_bn", "merge_chain", "merge_residual")
# structure ops, applied in order to the spec-built model before the plan:
#   {"op": "replace_block", "path": "s2.0", "kind": "conv_bn_shortcut"}  the block becomes its
#       shallow form (relucut.export.BLOCK_REPLACEMENTS: "conv_bn_shortcut" keeps the shortcut and
#       the post-add ReLU; "conv_bn", written before that fix, is the conv-BN alone)
#   {"op": "aux_exit", "after": "s3"}  only the stages up to "after", then an auxiliary head
STRUCTURE_OPS = ("replace_block", "aux_exit")
STRUCTURE_FIELDS = {"replace_block": ("path", "kind"), "aux_exit": ("after",)}


@dataclass
class Recipe:
    model: ModelSpec
    plan: ReLUPlan
    transforms: list[dict[str, Any]] = field(default_factory=list)
    structure: list[dict[str, Any]] = field(default_factory=list)  # applied before the plan
    before: dict[str, Any] = field(default_factory=dict)  # counts of the plan-applied model
    after: dict[str, Any] = field(default_factory=dict)  # counts of the exported model
    meta: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file name -> "sha256:HEX" of its bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RECIPE_FORMAT,
            "version": RECIPE_VERSION,
            "model": self.model.to_dict(),
            "structure": self.structure,
            "plan": self.plan.to_dict(),
            "transforms": self.transforms,
            "relus": self.after.get("relus"),
            "before": self.before,
            "after": self.after,
            "meta": self.meta,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        if isinstance(data, dict) and data.get("format") == OLD_FINEGRAINED_FORMAT:
            raise RelucutError("this fine-grained export predates the one recipe format; export it again "
                               "(rerun the same relucut snl/senet command: it resumes from its checkpoints)")
        if not isinstance(data, dict) or data.get("format") != RECIPE_FORMAT:
            raise RelucutError('not a relucut recipe (missing "format": "relucut.recipe"); make one with relucut export')
        if data.get("version") not in READABLE_VERSIONS:
            raise RelucutError(
                f"recipe format version {data.get('version')} is not supported (this relucut reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}); export it again with this relucut"
            )
        try:
            model = ModelSpec.from_dict(dict(data["model"]))
            transforms = [dict(t) for t in data["transforms"]]
            structure = [dict(t) for t in data.get("structure") or []]  # version 1 has none
        except RelucutError:  # an untrusted factory, a malformed spec: already one line
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise RelucutError(f"corrupt recipe: {exc.__class__.__name__}: {exc}") from None
        for t in transforms:
            if t.get("op") not in TRANSFORM_OPS:
                raise RelucutError(f"corrupt recipe: unknown transform {t.get('op')!r}")
        for t in structure:
            check_structure_op(t)
        before, after, meta = (dict(data.get(key) or {}) for key in ("before", "after", "meta"))
        return cls(model, ReLUPlan.from_dict(data.get("plan")), transforms, structure, before, after, meta,
                   recorded_files(data))

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json_text(self.to_dict(), where=path))

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


def check_structure_op(step: dict[str, Any]) -> None:
    """A structure op is a known op with each of its fields a string."""
    fields = STRUCTURE_FIELDS.get(step.get("op"))
    if fields is None:
        raise RelucutError(f"corrupt recipe: unknown structure op {step.get('op')!r} "
                           f"(this relucut knows {', '.join(STRUCTURE_OPS)})")
    missing = [f for f in fields if not isinstance(step.get(f), str)]
    if missing:
        raise RelucutError(f"corrupt recipe: structure op {step['op']!r} needs {', '.join(missing)} "
                           "(a string)")


def is_export_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / RECIPE_FILE).is_file()


def file_hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def recorded_files(data: dict[str, Any]) -> dict[str, str]:
    """The ``files`` of a recipe dict: plain file names to "sha256:HEX" (none for older exports)."""
    files = data.get("files") or {}
    ok = isinstance(files, dict) and all(
        isinstance(k, str) and isinstance(v, str) and k == Path(k).name and v.startswith("sha256:")
        for k, v in files.items())
    if not ok:
        raise RelucutError('corrupt recipe: "files" must map file names to "sha256:..." hashes')
    return dict(files)
