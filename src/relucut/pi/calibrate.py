"""Fit a profile's per-ReLU, per-MAC and per-layer constants to the user's own measurements.

Each measurement is one network run: its ReLUs, ReLU layers and MACs, and the online seconds and
bytes it took (``relucut pi measure --json`` output works directly). Time is fit as
``t = relus * a + macs * b + layers * c`` and bytes as ``B = relus * a' + macs * b'`` by least
squares (numpy.linalg.lstsq); a column whose coefficient comes out negative is dropped and the
fit repeated, so every constant stays physical. The fitted constants describe the measured
set-up (threads, link) and are written as compute constants of a profile file.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from relucut.errors import RelucutError
from relucut.pi.profiles import Profile

REQUIRED = ("relus", "relu_layers", "macs", "online_s", "online_bytes")


def _row(item: dict[str, Any], where: str) -> dict[str, float]:
    if "warm" in item and "relus" in item:  # a `relucut pi measure --json` result
        row = {"relus": item["relus"], "relu_layers": item["relu_layers"], "macs": item["macs"],
               "online_s": item["warm"]["wall_s"], "online_bytes": item["warm"]["bytes"]}
        if "first" in item:
            row["setup_s"] = item["first"]["wall_s"] - item["warm"]["wall_s"]
            row["setup_bytes"] = item["first"]["bytes"] - item["warm"]["bytes"]
        return row
    missing = [k for k in REQUIRED if k not in item]
    if missing:
        raise RelucutError(f"{where}: measurement lacks {', '.join(missing)}; give {', '.join(REQUIRED)} "
                           "or the output of `relucut pi measure --json`")
    return {k: float(v) for k, v in item.items() if isinstance(v, (int, float))}


def read_measurements(paths: list[str | Path]) -> list[dict[str, float]]:
    rows = []
    for path in map(Path, paths):
        if not path.is_file():
            raise RelucutError(f"measurement file {path} not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RelucutError(f"{path} is not valid JSON ({exc})") from None
        items = data.get("measurements", [data]) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise RelucutError(f"{path} must hold a measurement object or a list of them")
        rows += [_row(item, f"{path}[{i}]") for i, item in enumerate(items)]
    return rows


def nonneg_lstsq(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares with negative coefficients removed one at a time; returns coef and r^2."""
    active = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (sol >= 0).all():
            coef[:] = 0
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    pred = x @ coef
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return coef, r2


def calibrate(rows: list[dict[str, float]], base: Profile, name: str | None = None) -> tuple[Profile, dict[str, Any]]:
    """Returns ``base`` with its online constants fitted to ``rows`` and the fit's statistics."""
    if len(rows) < 3:
        raise RelucutError(f"calibration needs at least 3 measurements of different networks, got {len(rows)}")
    relus = np.array([r["relus"] for r in rows], float)
    layers = np.array([r["relu_layers"] for r in rows], float)
    macs = np.array([r["macs"] for r in rows], float)
    secs = np.array([r["online_s"] for r in rows], float)
    nbytes = np.array([r["online_bytes"] for r in rows], float)
    # scale columns so the solver sees comparable magnitudes
    cols = np.stack([relus, macs, layers], 1)
    scale = np.where(cols.max(0) > 0, cols.max(0), 1.0)
    t_coef, t_r2 = nonneg_lstsq(cols / scale, secs)
    b_coef, b_r2 = nonneg_lstsq(cols[:, :2] / scale[:2], nbytes)
    t_coef, b_coef = t_coef / scale, b_coef / scale[:2]
    changes = {
        "relu_online_s": t_coef[0], "mac_online_s": t_coef[1], "layer_online_s": t_coef[2],
        "relu_online_bytes": b_coef[0], "mac_online_bytes": b_coef[1],
        "rounds_per_layer": 0.0,  # the measured times already contain the link's round trips
    }
    setups = [r for r in rows if "setup_s" in r]
    if setups:
        changes["setup_s"] = float(np.median([r["setup_s"] for r in setups]))
        changes["setup_bytes"] = float(np.median([r["setup_bytes"] for r in setups]))
    sources = {k: "fitted by `relucut pi calibrate` to the user's measurements" for k in changes}
    profile = replace(base, name=name or f"{base.name}-calibrated", sources={**base.sources, **sources},
                      **{k: float(v) for k, v in changes.items()})
    fit = {"measurements": len(rows), "time_r2": t_r2, "bytes_r2": b_r2,
           "time_fit": {"per_relu_s": t_coef[0], "per_mac_s": t_coef[1], "per_layer_s": t_coef[2]},
           "bytes_fit": {"per_relu": b_coef[0], "per_mac": b_coef[1]}}
    return profile, fit


def profile_file_data(profile: Profile, base: str, fit: dict[str, Any]) -> dict[str, Any]:
    data = profile.to_dict()
    data["base"] = base
    data["fit"] = fit
    return data
