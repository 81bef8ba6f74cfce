"""DeepReShape / HybReNets (Jha et al., 2023): per ReLU budget, the ReLU-equalized HybReNet widened to
the budget, or below its capacity floor a least-critical-heavy HybReNet culled and thinned until it
fits (``relucut.deepreshape``); the design is trained with KD from the teacher and exported.

A design's folder is one training run of the engine with ``export/`` and ``result.json`` beside its
files, the same in ``relucut.reduce``, a frontier (``OUT/deepreshape/<budget>``) and
``relucut deepreshape`` (one folder per design and role).
"""

from __future__ import annotations

from dataclasses import dataclass

from relucut.methods._config import MethodConfig, need, setting
from relucut.methods._context import EXPORT_DIR, RESULT_FILE, FrontierStep, MethodResult
from relucut.methods._registry import register_method

STAGES = ("s1", "s2", "s3", "s4")
SLIDES_ORDER = ["s3", "s2", "s4", "s1"]  # the slides' CIFAR-100 order, most -> least critical


@dataclass
class DeepReShapeConfig(MethodConfig):
    """The HybReNet design for ``budget`` (exact ReLUs <= budget), trained with KD from the teacher."""

    method = "deepreshape"

    budget: int | None = setting(None, help="ReLU budget of the design, e.g. 25k.")
    equalized: str = setting("hrn_5x5x3x", help="The ReLU-equalized HybReNet ('relucut reshape'; the slides' "
                                                "CIFAR-100 order gives hrn_5x5x3x).")
    order: list[str] | None = setting(None, help="Stages from most to least critical, e.g. s3,s2,s4,s1 (default: "
                                                 "a frontier's DeepReDuce criticality, else s3,s2,s4,s1).")
    min_width: int = setting(16, help="Capacity floor: below this first-stage width m, switch from widening to "
                                      "culling/thinning.")
    blocks: list[int] = setting(help="Blocks per stage (phi), e.g. 2,2,2,2.", factory=lambda: [2, 2, 2, 2])

    def check(self) -> None:
        from relucut.models.hybrenet import parse_hrn_name

        super().check()
        parse_hrn_name(self.equalized)
        need(self.budget is None or self.budget >= 1, f"budget must be >= 1 ReLU, got {self.budget}")
        need(self.min_width >= 1, f"min_width must be >= 1, got {self.min_width}")
        need(len(self.blocks) == len(STAGES) and all(b >= 1 for b in self.blocks),
             f"blocks must give {len(STAGES)} stages of >= 1 block, got {self.blocks}")
        order = self.stage_order()
        need(sorted(order) == list(STAGES), f"order must rank {', '.join(STAGES)} once each, got {', '.join(order)}")

    def stage_order(self) -> list[str]:
        return list(self.order) if self.order is not None else list(SLIDES_ORDER)


def frontier(entry: str, template: DeepReShapeConfig, fr) -> list:
    """One step: a design per distinct ReLU budget, trained together (over Ray when asked)."""
    def work() -> list:
        from relucut.errors import RelucutError

        stages = [s for s in fr.full.stage_names if s != "stem"]
        if stages != list(STAGES):
            fr.ctx.say(f"note: DeepReShape designs four-stage ResNets; {fr.ctx.spec.name} has stages "
                       f"{', '.join(stages)}, skipping it")
            return []
        order = template.order
        if order is None and fr.shared.get("criticality_order"):
            order = list(reversed(fr.shared["criticality_order"]))  # most critical first
        width = int(fr.ctx.spec.kwargs.get("base_width", template.min_width))
        designs = []
        for budget in sorted({b for b in fr.relu_budgets.values() if b is not None}):
            config = template.with_budget(budget)
            config.order, config.min_width = order, min(template.min_width, width)
            try:
                designs.append(design_job(config, fr.ctx.at(fr.out / entry / str(budget))))
            except RelucutError as exc:
                fr.ctx.say(f"note: no DeepReShape design for {budget:,} ReLUs ({exc})")
        finals = fr.ctx.jobs().run([job for _, _, job in designs], lambda *_: None)
        return [finish_design(config, design, job, finals[job.key], fr.ctx.at(job.run_dir), entry)
                for config, design, job in designs]

    return [FrontierStep(entry, "deepreshape: one HybReNet design per budget", None, work)]


def design_of(config: DeepReShapeConfig, num_classes: int, input_size: tuple[int, int, int]):
    """The ``relucut.deepreshape.capacity.BudgetDesign`` for the config's budget (exact ReLUs <= it)."""
    from relucut.deepreshape.capacity import design_for_budget
    from relucut.models.hybrenet import parse_hrn_name

    order = [STAGES.index(s) for s in config.stage_order()]
    return design_for_budget(config.budget, parse_hrn_name(config.equalized), order, blocks=config.blocks,
                             input_size=input_size, num_classes=num_classes, min_width=config.min_width)


def design_job(config: DeepReShapeConfig, ctx):
    """(config, design, the engine job that trains it in ``ctx.out`` with KD from the teacher)."""
    from relucut.deepreshape.pipeline import design_config
    from relucut.executors import TrainJob

    config.check()
    need(config.budget is not None, "deepreshape needs a ReLU budget; give e.g. --budget 25k")
    design = design_of(config, ctx.spec.num_classes, ctx.spec.input_size)
    teacher = ctx.teacher_path("DeepReShape")
    train = design_config(design, ctx.base, ctx.spec.num_classes, ctx.spec.input_size,
                          teacher=str(teacher.resolve()) if teacher is not None else None)
    return config, design, TrainJob(f"deepreshape {config.budget}", train, ctx.out)


def finish_design(config: DeepReShapeConfig, design, job, final: dict, ctx, entry: str) -> MethodResult:
    """The trained design exported beside its run (``export/``, reused on a rerun) with result.json."""
    from relucut.deepreshape.pipeline import design_label
    from relucut.export import export_intact, export_run
    from relucut.rundir import atomic_write_json

    export_dir = ctx.out / EXPORT_DIR
    if not export_intact(export_dir):
        export_run(job.run_dir, export_dir)
    result = MethodResult.of_export(entry, f"{entry}/{config.budget}", design_label(design), ctx.out, export_dir,
                                    final.get("best_val_acc"), final.get("test_acc"), budget=config.budget,
                                    config=config.to_dict(), seconds=final.get("seconds"))
    report = result.report
    result.summary = {"method": "deepreshape", "budget": config.budget, "network": result.label,
                      "design": design.to_dict(),
                      "result": {"relus": report.relus, "val_acc": result.val_acc, "test_acc": result.test_acc,
                                 "macs": report.macs, "conv_depth": report.conv_depth}}
    atomic_write_json(ctx.out / RESULT_FILE, result.summary)
    return result


@register_method(DeepReShapeConfig, order=20, frontier=frontier, parallel_jobs=True, command=False,
                 summary="DeepReShape: the HybReNet design for the budget (widened, or culled and thinned), "
                         "trained with KD.")
def run(config: DeepReShapeConfig, ctx):
    """The design for ``config.budget`` trained in the run folder with KD from the teacher, exported."""
    config, design, job = design_job(config, ctx)
    final = ctx.jobs().run([job], lambda *_: None)[job.key]
    return finish_design(config, design, job, final, ctx, "deepreshape")


__all__ = ["DeepReShapeConfig", "design_job", "design_of", "finish_design", "run"]
