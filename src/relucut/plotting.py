"""Plot helpers shared by every frontier plot: matplotlib on the Agg backend and the axes."""

from __future__ import annotations

from relucut.errors import RelucutError


def matplotlib_pyplot():
    """matplotlib.pyplot on the Agg backend (no screen needed), or a one-line install hint."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RelucutError("the plots need matplotlib; pip install 'relucut[plot]'") from None
    return plt


def log_axis(ax, xs: list[float]) -> None:
    ax.set_xscale("log")
    xs = [x for x in xs if x is not None and x > 0]  # a log axis has no room for 0
    if xs:  # room on the log axis for the labels of the end points
        ax.set_xlim(min(xs) / 4, max(xs) * 2)
    ax.grid(True, which="both", alpha=0.3)


def percent_axis(ax) -> None:
    """Accuracies are fractions; the axis reads them in percent."""
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_ylabel("validation accuracy (%)")


__all__ = ["log_axis", "matplotlib_pyplot", "percent_axis"]
