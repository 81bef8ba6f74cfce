"""Fit a profile's online constants to the user's own measurements.

Each measurement is one network run: its workload (ReLUs, ReLU layers, MACs and, where known,
truncations, gathered elements of masked sites and conv/linear layers) and the online seconds,
bytes and (optionally) rounds it took (``relucut pi measure --json`` output works directly). Fits,
by least squares on relative residuals (numpy.linalg.lstsq, each row divided by its measured value,
so small and large networks count alike):

    time   = relus*a + macs*b + layers*c + truncations*d + gathered*e + linear_layers*f
    bytes  = relus*a' + macs*b' + truncations*d'
    rounds = layers*r + linear_layers*r'

A term whose column is zero in every row is left out; one whose coefficient comes out negative is
dropped and the fit repeated, so every constant stays physical. The fitted constants describe the
measured set-up (threads, link) and are written as compute constants of a profile file; the
measured times hold that link's round trips, so the profile's default RTT becomes 0 (pass another
link's RTT to add its round trips).

``calibrate_kinds`` fits the per-element kinds (GELU, softmax, LayerNorm, products, ...) on what a
profile's other terms leave of each measurement, with every other constant kept:

    time   - profile's time   = sum over kinds (elements*t_k + layers*t_layer_k)
    bytes  - profile's bytes  = sum over kinds (elements*b_k + layers*b_layer_k)
    rounds - profile's rounds = sum over kinds layers*r_k

(relative weights: each row divided by its whole measured value) into the profile's ``kind_costs``.
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


# workload columns (a missing one is 0) and the profile field each time / bytes / rounds term fits
TIME_TERMS = {"relus": "relu_online_s", "macs": "mac_online_s", "relu_layers": "layer_online_s",
              "truncations": "truncation_online_s", "gathered": "gather_online_s",
              "linear_layers": "linear_layer_online_s"}
BYTES_TERMS = {"relus": "relu_online_bytes", "macs": "mac_online_bytes", "truncations": "truncation_online_bytes"}
ROUNDS_TERMS = {"relu_layers": "rounds_per_layer", "linear_layers": "rounds_per_linear_layer"}
TIME_KEYS = {"relus": "per_relu_s", "macs": "per_mac_s", "relu_layers": "per_layer_s",
             "truncations": "per_truncation_s", "gathered": "per_gathered_s", "linear_layers": "per_linear_layer_s"}
BYTES_KEYS = {"relus": "per_relu", "macs": "per_mac", "truncations": "per_truncation"}
ROUNDS_KEYS = {"relu_layers": "per_layer", "linear_layers": "per_linear_layer"}


def measurement_row(work) -> dict[str, float]:
    """The workload columns of one network (a ``relucut.pi.Workload``), per-element kinds included."""
    return {**{k: getattr(work, k) for k in TIME_TERMS}, **kind_columns(work.smooth, work.smooth_layers)}


def kind_columns(elements: dict[str, int], layers: dict[str, int]) -> dict[str, float]:
    """``kind:<k>`` (elements) and ``kind_layers:<k>`` (layers of that kind) columns of a measurement row."""
    return {**{f"kind:{k}": n for k, n in elements.items()}, **{f"kind_layers:{k}": n for k, n in layers.items()}}


def _row(item: dict[str, Any], where: str) -> dict[str, float]:
    if "warm" in item and "relus" in item:  # a `relucut pi measure --json` result
        row = {k: item[k] for k in TIME_TERMS if k in item}
        row.update(kind_columns(item.get("kinds", {}), item.get("kind_layers", {})))
        row.update(online_s=item["warm"]["wall_s"], online_bytes=item["warm"]["bytes"])
        if item["warm"].get("rounds"):
            row["rounds"] = item["warm"]["rounds"]
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


def nonneg_lstsq(x: np.ndarray, y: np.ndarray, relative: bool = False,
                 scale: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Least squares with negative coefficients removed one at a time; returns coef and r^2.

    ``relative`` divides each row by its target (or by ``scale``), so the fit minimises relative errors."""
    ref = np.abs(y if scale is None else scale)
    w = 1.0 / np.where(ref != 0, ref, 1.0) if relative else np.ones_like(y)
    active = [j for j in range(x.shape[1]) if np.any(x[:, j] != 0)]
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active] * w[:, None], y * w, rcond=None)
        if (sol >= 0).all():
            coef[:] = 0
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    pred = x @ coef
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return coef, r2


def _fit(rows: list[dict[str, float]], terms: dict[str, str], target: str) -> tuple[dict[str, float], float, list[str], float]:
    """Coefficients per workload column, r^2, the columns dropped, and the worst relative error."""
    cols = np.array([[float(r.get(k, 0.0)) for k in terms] for r in rows])
    y = np.array([float(r[target]) for r in rows])
    scale = np.where(cols.max(0) > 0, cols.max(0), 1.0)  # comparable magnitudes for the solver
    coef, r2 = nonneg_lstsq(cols / scale, y, relative=True)
    coef = coef / scale
    present = [k for j, k in enumerate(terms) if np.any(cols[:, j] != 0)]
    dropped = [k for j, k in enumerate(terms) if k in present and coef[j] == 0]
    worst = float(np.max(np.abs(cols @ coef / np.where(y != 0, y, 1.0) - 1)))
    return dict(zip(terms, map(float, coef))), r2, dropped, worst


def calibrate(rows: list[dict[str, float]], base: Profile, name: str | None = None) -> tuple[Profile, dict[str, Any]]:
    """Returns ``base`` with its online constants fitted to ``rows`` and the fit's statistics."""
    if len(rows) < 3:
        raise RelucutError(f"calibration needs at least 3 measurements of different networks, got {len(rows)}")
    t_coef, t_r2, t_drop, t_worst = _fit(rows, TIME_TERMS, "online_s")
    b_coef, b_r2, b_drop, b_worst = _fit(rows, BYTES_TERMS, "online_bytes")
    changes = {TIME_TERMS[k]: v for k, v in t_coef.items()}
    changes.update({BYTES_TERMS[k]: v for k, v in b_coef.items()})
    fit: dict[str, Any] = {
        "measurements": len(rows), "time_r2": t_r2, "bytes_r2": b_r2,
        "time_max_rel_error": t_worst, "bytes_max_rel_error": b_worst,
        "time_fit": {TIME_KEYS[k]: v for k, v in t_coef.items()},
        "bytes_fit": {BYTES_KEYS[k]: v for k, v in b_coef.items()},
        "dropped": [f"time/{k}" for k in t_drop] + [f"bytes/{k}" for k in b_drop],
    }
    # the measured times already contain the measured link's round trips: no RTT on top by default;
    # without measured rounds the base profile's rounds per layer price other links
    changes["rtt_s"] = 0.0
    with_rounds = [r for r in rows if r.get("rounds")]
    if len(with_rounds) >= 3:
        r_coef, r_r2, r_drop, r_worst = _fit(with_rounds, ROUNDS_TERMS, "rounds")
        changes.update({ROUNDS_TERMS[k]: v for k, v in r_coef.items()})
        fit.update(rounds_r2=r_r2, rounds_max_rel_error=r_worst,
                   rounds_fit={ROUNDS_KEYS[k]: v for k, v in r_coef.items()})
        fit["dropped"] += [f"rounds/{k}" for k in r_drop]
    setups = [r for r in rows if "setup_s" in r]
    if setups:
        changes["setup_s"] = float(np.median([r["setup_s"] for r in setups]))
        changes["setup_bytes"] = float(np.median([r["setup_bytes"] for r in setups]))
    sources = {k: "fitted by `relucut pi calibrate` to the user's measurements" for k in changes}
    profile = replace(base, name=name or f"{base.name}-calibrated", sources={**base.sources, **sources},
                      **{k: float(v) for k, v in changes.items()})
    return profile, fit


def _kinds_in(rows: list[dict[str, float]]) -> list[str]:
    return sorted({k.split(":", 1)[1] for r in rows for k, v in r.items() if k.startswith("kind:") and v})


def _rest(rows: list[dict[str, float]], profile: Profile) -> list[tuple[float, float, float]]:
    """What the profile's other terms predict per row: compute seconds, bytes, rounds."""
    from relucut.pi.estimate import Workload, estimate

    out = []
    for r in rows:
        work = Workload(**{k: int(r.get(k, 0)) for k in TIME_TERMS})
        est = estimate(work, replace(profile, kind_costs={}, kind_relu_equivalents={}), threads=profile.ref_threads)
        out.append((est.online_compute_s, est.online_bytes, est.online_rounds))
    return out


def _fit_rest(cols: np.ndarray, measured: np.ndarray, rest: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Non-negative coefficients of ``cols`` for measured - rest (rows weighed by 1/measured), r^2 of
    the whole prediction, and its worst relative error."""
    scale = np.where(cols.max(0) > 0, cols.max(0), 1.0)
    coef, _ = nonneg_lstsq(cols / scale, measured - rest, relative=True, scale=measured)
    coef = coef / scale
    pred = rest + cols @ coef
    ss_tot = float(np.sum((measured - measured.mean()) ** 2))
    r2 = 1.0 - float(np.sum((measured - pred) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return coef, r2, float(np.max(np.abs(pred / np.where(measured != 0, measured, 1.0) - 1)))


def calibrate_kinds(rows: list[dict[str, float]], profile: Profile,
                    name: str | None = None) -> tuple[Profile, dict[str, Any]]:
    """``profile`` with the per-element kinds in ``rows`` priced by their own fitted terms."""
    kinds = _kinds_in(rows)
    if not kinds:
        raise RelucutError("no per-element kind (GELU, softmax, ...) in these measurements: nothing to fit")
    if len(rows) < 2 * len(kinds):
        raise RelucutError(f"{len(kinds)} kinds need at least {2 * len(kinds)} measurements, got {len(rows)}")
    rest = np.array(_rest(rows, profile))
    elements = np.array([[float(r.get(f"kind:{k}", 0)) for k in kinds] for r in rows])
    layers = np.array([[float(r.get(f"kind_layers:{k}", 0)) for k in kinds] for r in rows])
    n = len(kinds)
    t_coef, t_r2, t_worst = _fit_rest(np.hstack([elements, layers]), np.array([r["online_s"] for r in rows]), rest[:, 0])
    b_coef, b_r2, b_worst = _fit_rest(np.hstack([elements, layers]), np.array([r["online_bytes"] for r in rows]),
                                      rest[:, 1])
    costs = {k: {"online_s": float(t_coef[i]), "layer_online_s": float(t_coef[n + i]),
                 "online_bytes": float(b_coef[i]), "layer_online_bytes": float(b_coef[n + i])}
             for i, k in enumerate(kinds)}
    fit: dict[str, Any] = {"measurements": len(rows), "kinds": kinds, "time_r2": t_r2, "bytes_r2": b_r2,
                           "time_max_rel_error": t_worst, "bytes_max_rel_error": b_worst}
    with_rounds = [i for i, r in enumerate(rows) if r.get("rounds")]
    if len(with_rounds) >= n:
        r_coef, r_r2, r_worst = _fit_rest(layers[with_rounds], np.array([rows[i]["rounds"] for i in with_rounds]),
                                          rest[with_rounds, 2])
        for i, k in enumerate(kinds):
            costs[k]["rounds_per_layer"] = float(r_coef[i])
        fit.update(rounds_r2=r_r2, rounds_max_rel_error=r_worst)
    fit["kind_costs"] = costs
    sources = {f"kind_costs.{k}": "fitted by relucut.pi.calibrate.calibrate_kinds on what the other terms leave"
               for k in kinds}
    fitted = replace(profile, name=name or profile.name, kind_costs={**profile.kind_costs, **costs},
                     sources={**profile.sources, **sources})
    return fitted, fit


def profile_file_data(profile: Profile, base: str, fit: dict[str, Any]) -> dict[str, Any]:
    data = profile.to_dict()
    data["base"] = base
    data["fit"] = fit
    return data
