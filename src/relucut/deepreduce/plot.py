"""The Pareto plot: validation accuracy against ReLU count (log scale), frontier highlighted, and
beside it against the estimated private-inference latency (DELPHI online, ``relucut.pi``), where
ReLU layers and MACs count too, so its frontier can differ from the ReLU one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from relucut.deepreduce.frontier import latency_s, latency_frontier
from relucut.pareto import FrontierPoint
from relucut.plotting import log_axis, matplotlib_pyplot, percent_axis
from relucut.rundir import atomic_write

STEP_MARKERS = {"culled": "o", "thinned": "s", "alpha": "^", "rho": "v", "alpha+rho": "D", "one-block": "P"}


def draw_frontier(results: Sequence[FrontierPoint], title: str = "DeepReDuce",
                  teacher: tuple[int, float] | None = None, teacher_latency_s: float | None = None):
    """The figure (matplotlib, Agg): ReLUs panel, plus a latency panel when estimates exist."""
    plt = matplotlib_pyplot()
    timed = any(latency_s(r) is not None for r in results)
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(13, 5) if timed else (7.5, 5), dpi=120,
                             squeeze=False)
    ax = axes[0][0]
    _points(ax, results, lambda r: r.relus)
    front = sorted((r for r in results if r.on_frontier), key=lambda r: r.relus)
    if front:
        ax.plot([r.relus for r in front], [r.val_acc for r in front], "-", color="tab:red", lw=1.8,
                zorder=3, label="Pareto frontier")
        for i, r in enumerate(front):
            ax.scatter([r.relus], [r.val_acc], marker=STEP_MARKERS.get(r.details["step"], "o"), s=48, color="tab:red",
                       zorder=4)
            # alternate below-right / above-left so neighbouring labels do not overprint
            offset, align = ((6, -11), "left") if i % 2 == 0 else ((-6, 6), "right")
            ax.annotate(r.plan, (r.relus, r.val_acc), textcoords="offset points", xytext=offset,
                        ha=align, fontsize=7, color="tab:red")
    if teacher is not None:
        ax.scatter([teacher[0]], [teacher[1]], marker="*", s=140, color="tab:blue", zorder=5,
                   label="full-ReLU teacher")
    log_axis(ax, [r.relus for r in results] + ([teacher[0]] if teacher else []))
    ax.set_xlabel("ReLUs per input (log scale)")
    percent_axis(ax)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    if timed:
        _latency_panel(axes[0][1], results, teacher, teacher_latency_s)
    return fig


def _points(ax, results: Sequence[FrontierPoint], x) -> None:
    for step, marker in STEP_MARKERS.items():
        pts = [r for r in results if r.details["step"] == step and x(r) is not None]
        if pts:
            ax.scatter([x(r) for r in pts], [r.val_acc for r in pts], marker=marker, s=36, color="0.6",
                       label=step, zorder=2)


def _latency_panel(ax, results: Sequence[FrontierPoint], teacher: tuple[int, float] | None,
                   teacher_latency_s: float | None) -> None:
    _points(ax, results, latency_s)
    relu_front = [r for r in results if r.on_frontier and latency_s(r) is not None]
    ax.scatter([r.online_s for r in relu_front], [r.val_acc for r in relu_front], s=48, facecolors="none",
               edgecolors="tab:red", zorder=4, label="on the ReLU frontier")
    front = latency_frontier(results)
    ax.step([r.online_s for r in front], [r.val_acc for r in front], where="post", color="black", lw=1.4,
            zorder=3, label="latency frontier")
    for i, r in enumerate(front):
        offset, align = ((6, -11), "left") if i % 2 == 0 else ((-6, 6), "right")
        ax.annotate(f"{r.plan} {r.online_s:.3g}s", (r.online_s, r.val_acc),
                    textcoords="offset points", xytext=offset, ha=align, fontsize=7)
    xs = [r.online_s for r in results if latency_s(r) is not None]
    if teacher is not None and teacher_latency_s is not None:
        ax.scatter([teacher_latency_s], [teacher[1]], marker="*", s=140, color="tab:blue", zorder=5,
                   label="full-ReLU teacher")
        xs.append(teacher_latency_s)
    log_axis(ax, xs)
    ax.set_xlabel("estimated private-inference latency, DELPHI online (s, log scale)")
    percent_axis(ax)
    ax.set_title("the same networks by estimated latency (ReLUs, ReLU layers, MACs)")
    ax.legend(fontsize=8, loc="lower right")


def plot_frontier(results: Sequence[FrontierPoint], path: Path, title: str = "DeepReDuce",
                  teacher: tuple[int, float] | None = None, teacher_latency_s: float | None = None) -> Path:
    """Writes the PNG atomically; ``teacher`` is (ReLUs, validation accuracy as a fraction) of the
    full-ReLU network."""
    fig = draw_frontier(results, title, teacher, teacher_latency_s)  # a clear error without matplotlib
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path
