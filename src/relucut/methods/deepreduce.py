"""DeepReDuce (Jha et al., ICML 2021): stage criticality, then culled / thinned / reshaped
candidates trained with KD, and their ReLU-accuracy frontier (``relucut.deepreduce``).

One run is a whole search in its folder (``search.json``, ``teacher/``, ``criticality/``,
``candidates/<name>/``, the frontier tables and ``pareto.png``); ``relucut.reduce`` exports the
most accurate candidate (validation) within the budget, and a frontier takes every candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import time

from relucut.methods._config import MethodConfig, need, setting
from relucut.methods._context import EXPORT_DIR, RESULT_FILE, FrontierStep, MethodResult
from relucut.methods._registry import register_method


@dataclass
class DeepReDuceConfig(MethodConfig):
    """A DeepReDuce search; with a ``budget`` it trains only the candidates that fit, and its
    result is the most accurate of them on validation (without one: the most accurate of all)."""

    method = "deepreduce"

    budget: int | None = setting(None, help="Train only what fits, and return the best network under this many "
                                            "ReLUs (50k, 1.5M); default: the whole frontier.")
    criticality_epochs: int | None = setting(None, help="Fewer epochs for the stage networks of criticality: a "
                                                        "proxy schedule (recorded); default: --epochs.")
    criticality_without_kd: bool = setting(True, help="Also train the stage networks without KD (Table 1's W/o KD "
                                                      "column); C_k uses the KD ones.",
                                           flag="--criticality-without-kd/--criticality-kd-only")
    criticality_file: str | None = setting(None, help="A saved criticality.json to take the culling order from "
                                                      "(else it is computed).", flag="--criticality")
    one_block: bool = setting(True, help="Add the S* candidates (one block per ReLU stage) where the model allows.")
    thin_style: str = setting("post_add", help="Which ReLU of a block thinning drops: post_add (the authors' zoo) "
                                               "or inner.", choices=("post_add", "inner"))
    rho_mode: str = setting("stride", help="How rho candidates lower the resolution: stride (a strided stem conv, "
                                           "the authors' zoo) or pool (average-pool the input).",
                            choices=("stride", "pool"))
    init: str = setting("scratch", help="Candidates start from fresh weights (scratch) or the teacher's "
                                        "(teacher: ReLUs removed, weights kept).", choices=("scratch", "teacher"))

    def check(self) -> None:
        super().check()
        need(self.budget is None or self.budget >= 1, f"budget must be >= 1 ReLU, got {self.budget}")
        need(self.criticality_epochs is None or self.criticality_epochs >= 1,
             f"criticality_epochs must be >= 1, got {self.criticality_epochs}")

    @classmethod
    def for_frontier(cls, search_epochs: int, finetune_epochs: int) -> DeepReDuceConfig:  # noqa: ARG003
        """A frontier's DeepReDuce: criticality from the KD stage networks only (Table 1's W/o KD
        column is a report, not a choice); its networks train with the base recipe."""
        return cls(criticality_without_kd=False)

    def search_settings(self) -> dict:
        """What the search computes (its budget only limits which candidates it trains)."""
        return {k: v for k, v in self.to_dict().items() if k != "budget"}


def _search(config: DeepReDuceConfig, ctx):
    from relucut.deepreduce.search import Search

    return Search(config, ctx.base, ctx.out, teacher=ctx.teacher_path("DeepReDuce"), executor=ctx.jobs(),
                  console=ctx.console)


def frontier(entry: str, template: DeepReDuceConfig, fr) -> list:
    """One step: the search under the largest ReLU budget (under latency budgets: every candidate,
    since a MAC-light one may fit where ReLU counts say not); every candidate is a point."""
    def work() -> list:
        budget = None if fr.latency else max(fr.relu_budgets.values())
        config = template.with_budget(budget)
        search = _search(config, fr.ctx.at(fr.out / entry))
        if budget is not None and budget < search.smallest_reachable():
            fr.ctx.say(f"note: no DeepReDuce network fits {budget:,} ReLUs; skipping DeepReDuce")
            return []
        outcome = search.run(budget)
        fr.shared["criticality_order"] = list(outcome.criticality.order)
        return candidate_results(outcome, entry)

    return [FrontierStep(entry, "deepreduce: criticality and the candidates under the budgets", None, work)]


def _has_stem(ctx) -> bool:
    """Whether the model declares a stem stage (zoo models; users' models have stages by resolution)."""
    return "stem" in getattr(ctx.spec.build(), "stage_names", ())


def cli_report(result, ctx) -> None:
    """What ``relucut deepreduce`` prints: the frontier, the network it exported, and where things are."""
    import json
    import sys

    from relucut.deepreduce.frontier import chance_warning, rich_table

    doc = json.loads((ctx.out / "frontier.json").read_text())
    front, rows = doc["frontier"], doc["candidates"]
    say = ctx.console.print
    stem = "; the stem is always culled" if _has_stem(ctx) else ""
    say(rich_table(front, f"Pareto frontier ({len(front)} of {len(rows)} candidates, chosen on validation accuracy"
                          f"{stem})"))
    say(f"wrote {ctx.out / 'frontier.json'}, frontier.csv, frontier.md, candidates.csv, pareto.png", highlight=False)
    what = "best under the budget" if result.budget is not None else "most accurate"
    test = f"  test {100 * result.test_acc:.2f}%" if result.test_acc is not None else ""
    say(f"[bold]{what}[/]: {result.summary['name']}  {result.relus:,} ReLUs  val {100 * result.val_acc:.2f}%{test}, "
        f"exported to {result.export_dir}", highlight=False)
    warning = chance_warning([r["val_acc"] for r in rows], ctx.spec.num_classes,
                             "the criticality order and the frontier are")
    if warning:
        print(warning, file=sys.stderr)


@register_method(DeepReDuceConfig, order=10, needs_budget=False, frontier=frontier, parallel_jobs=True,
                 cli_report=cli_report,
                 summary="DeepReDuce: criticality, then culled/thinned/reshaped candidates trained with KD, and "
                         "their ReLU-accuracy frontier.")
def run(config: DeepReDuceConfig, ctx):
    """The search, then its most accurate network (validation) within the budget, exported."""
    return export_pick(_search(config, ctx), config)


def export_pick(search, config: DeepReDuceConfig):
    """The search, then its pick (the most accurate candidate on validation within the budget, or
    of all) exported to ``out/export``; writes result.json."""
    from relucut.export import export_run
    from relucut.rundir import atomic_write_json

    started = time.time()
    outcome = search.run(config.budget)
    pick = outcome.best or max(outcome.results, key=lambda p: (p.val_acc, -p.relus))
    out = search.out
    export_run(out / pick.run_dir, out / EXPORT_DIR)
    result = MethodResult.of_export("deepreduce", f"deepreduce/{pick.name}", pick.plan, out, out / EXPORT_DIR,
                                    pick.val_acc, pick.test_acc, budget=config.budget, config=config.to_dict(),
                                    seconds=time.time() - started)
    report = result.report
    result.summary = {"method": "deepreduce", "budget": config.budget, "network": pick.plan, "name": pick.name,
                      "candidates": len(outcome.results), "criticality_order": outcome.criticality.order,
                      "result": {"relus": report.relus, "val_acc": pick.val_acc, "test_acc": pick.test_acc,
                                 "macs": report.macs, "conv_depth": report.conv_depth}}
    atomic_write_json(out / RESULT_FILE, result.summary)
    return result


def candidate_results(outcome, entry: str = "deepreduce") -> list:
    """Every trained candidate, exported beside its run (``candidates/<name>/export``, no ONNX: a
    frontier adds it to the networks it ends with) and counted there."""
    from relucut.export import export_intact, export_run

    results = []
    for p in outcome.results:
        run_dir = outcome.out / p.run_dir
        export_dir = run_dir / EXPORT_DIR
        if not export_intact(export_dir):  # a finished candidate never trains again; its export is reused
            export_run(run_dir, export_dir, onnx=False)
        results.append(MethodResult.of_export(entry, f"{entry}/{p.name}", p.plan, run_dir, export_dir, p.val_acc,
                                              p.test_acc, details=p.details))
    return results


__all__ = ["DeepReDuceConfig", "candidate_results", "export_pick", "run"]
