"""The Pareto plot: ReLU count (log scale) against validation accuracy, frontier highlighted."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from relucut.deepreduce.frontier import CandidateResult
from relucut.errors import RelucutError

STEP_MARKERS = {"culled": "o", "thinned": "s", "alpha": "^", "rho": "v", "alpha+rho": "D", "one-block": "P"}


def plot_frontier(results: Sequence[CandidateResult], path: Path, title: str = "DeepReDuce",
                  teacher: tuple[int, float] | None = None) -> Path:
    """Writes a PNG; ``teacher`` is (ReLUs, validation accuracy) of the full-ReLU network."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RelucutError("the Pareto plot needs matplotlib; pip install 'relucut[plot]'") from None
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    for step, marker in STEP_MARKERS.items():
        pts = [r for r in results if r.step == step]
        if pts:
            ax.scatter([r.relus for r in pts], [r.val_acc for r in pts], marker=marker, s=36,
                       color="0.6", label=step, zorder=2)
    front = sorted((r for r in results if r.on_frontier), key=lambda r: r.relus)
    if front:
        ax.plot([r.relus for r in front], [r.val_acc for r in front], "-", color="tab:red", lw=1.8,
                zorder=3, label="Pareto frontier")
        for i, r in enumerate(front):
            ax.scatter([r.relus], [r.val_acc], marker=STEP_MARKERS.get(r.step, "o"), s=48, color="tab:red",
                       zorder=4)
            # alternate below-right / above-left so neighbouring labels do not overprint
            offset, align = ((6, -11), "left") if i % 2 == 0 else ((-6, 6), "right")
            ax.annotate(r.network_label(), (r.relus, r.val_acc), textcoords="offset points", xytext=offset,
                        ha=align, fontsize=7, color="tab:red")
    if teacher is not None:
        ax.scatter([teacher[0]], [teacher[1]], marker="*", s=140, color="tab:blue", zorder=5,
                   label="full-ReLU teacher")
    ax.set_xscale("log")
    xs = [r.relus for r in results] + ([teacher[0]] if teacher else [])
    if xs:  # room on the log axis for the labels of the end points
        ax.set_xlim(min(xs) / 2.5, max(xs) * 2)
    ax.set_xlabel("ReLUs per input (log scale)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path
