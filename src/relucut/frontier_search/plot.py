"""frontier.png: validation accuracy against ReLUs and against estimated latency, one colour per
method, each method's own frontier thin and the combined one thick."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from relucut.plotting import log_axis, matplotlib_pyplot, percent_axis
from relucut.pareto import FrontierPoint, undominated
from relucut.rundir import atomic_write

PALETTE = ("tab:blue", "tab:purple", "tab:orange", "tab:brown", "tab:green", "tab:red", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray")


def colours() -> dict[str, str]:
    """One colour per frontier entry, in registry order (the teacher black)."""
    from relucut.methods import frontier_entries

    entries = frontier_entries()
    return {"teacher": "black", **{e: PALETTE[i % len(PALETTE)] for i, e in enumerate(entries)}}


def _panel(ax, points: Sequence[FrontierPoint], key: str, xlabel: str) -> None:
    palette = colours()
    for method in dict.fromkeys(p.method for p in points):
        mine = [p for p in points if p.method == method]
        colour = palette.get(method, "0.5")
        ax.scatter([p.cost(key) for p in mine], [p.val_acc for p in mine], s=30, color=colour, alpha=0.8,
                   marker="*" if method == "teacher" else "o", label=method, zorder=3)
        own = sorted(undominated(mine, key), key=lambda p: p.cost(key))
        if len(own) > 1:
            ax.step([p.cost(key) for p in own], [p.val_acc for p in own], where="post", color=colour, lw=0.8,
                    alpha=0.7, zorder=2)
    front = sorted(undominated(points, key), key=lambda p: p.cost(key))
    ax.step([p.cost(key) for p in front], [p.val_acc for p in front], where="post", color="black", lw=2.0,
            zorder=4, label="combined frontier")
    log_axis(ax, [p.cost(key) for p in points])
    ax.set_xlabel(xlabel)
    percent_axis(ax)
    ax.legend(fontsize=7, loc="best", framealpha=0.6)  # "best": clear of the points


def plot(points: Sequence[FrontierPoint], path: Path, title: str, engine: str) -> Path:
    """Writes the two-panel PNG atomically."""
    plt = matplotlib_pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), dpi=120)
    _panel(left, points, "relus", "ReLUs per input (log scale)")
    left.set_title(title)
    _panel(right, points, "online_s", f"estimated online latency under {engine} (s, log scale)")
    right.set_title("the same networks by what a private inference costs")
    fig.tight_layout()
    try:
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return Path(path)
