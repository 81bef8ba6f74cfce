"""The cost model: seconds and bytes of one private inference from ReLUs, ReLU layers and MACs.

Per phase (offline, online):
    compute  = (ReLUs * t_relu + MACs * t_mac + truncations * t_trunc + gathered * t_gather)
               * ref_threads / threads
               [+ layers * t_layer + linear layers * t_linear_layer online]
    transfer = bytes * 8 / bandwidth,   bytes = ReLUs * b_relu + MACs * b_mac + truncations * b_trunc
    time     = max(compute, transfer)   (garbling/OT pipelines overlap compute and sending)
             + rounds * RTT   (online only),
    rounds   = layers * rounds_per_layer + linear layers * rounds_per_linear_layer.
A ReLU layer is a site with at least one active ReLU. Truncations are the output elements of
convolutions, linear layers and average pools (a fixed-point engine rescales each product);
gathered elements are those of partially masked sites (an engine gathers the masked positions
before comparing and scatters them back), plus their polynomial positions where they compute one
(gathered a second time, apart from the ReLUs). Profiles without these terms leave them at 0.

"ReLUs" here are ReLU-equivalent comparisons (a report's ``comparisons``): ReLU 1, ReLU6 and
Hardtanh 2, LeakyReLU/PReLU 1 per element, max-pooling (window - 1) per output, max reductions.
"MACs" are those with a weight operand; products of two activations (attention) are the ``matmul``
kind. The per-element kinds (GELU, SiLU, softmax, LayerNorm, matmul, ...) are priced where the
profile has them, by their own terms (``kind_costs``: per element and per layer of the kind, added
to the phases above) or as ReLU-equivalents (``kind_relu_equivalents``); the others are left out
and listed in ``Estimate.unpriced`` (kind -> elements): the estimate is then a lower bound
(``Estimate.lower_bound``), and ``unpriced_line`` says so in one line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from relucut.cost import CostReport, kind_label
from relucut.site_module import POLY_KIND
from relucut.errors import RelucutError
from relucut.pi.profiles import Profile, resolve_profile
from relucut.pi.requests import RequestLoad, simulate_requests


@dataclass(frozen=True)
class Workload:
    """What the cost model needs from a network."""

    relus: int  # ReLU-equivalent comparisons
    relu_layers: int  # layers that compare
    macs: int  # with a weight operand (activation x activation MACs are the smooth kind 'matmul')
    smooth: dict[str, int] = field(default_factory=dict)  # elements of smooth kinds
    smooth_layers: dict[str, int] = field(default_factory=dict)
    truncations: int = 0  # output elements of convs, linear layers and average pools
    gathered: int = 0  # elements of partially masked sites (+ their polynomial positions, gathered again)
    linear_layers: int = 0  # conv and linear layers

    @classmethod
    def of(cls, report: CostReport) -> Workload:
        layers = {kind: report.smooth_layers({kind}) for kind in report.smooth_by_kind}
        partial = {s.site.name for s in report.sites if 0 < s.relus < s.total}
        gathered = sum(s.total for s in report.sites if s.site.name in partial) + sum(
            o.numel for o in report.others if o.kind == POLY_KIND and o.name in partial)
        return cls(relus=report.comparisons, relu_layers=report.comparison_layers, macs=report.weight_macs,
                   smooth=report.smooth_by_kind, smooth_layers=layers, truncations=report.truncations,
                   gathered=gathered, linear_layers=report.linear_layers)

    def priced(self, table: dict[str, float], own: set[str] | frozenset = frozenset()) -> tuple[Workload, list[str]]:
        """This workload with the smooth kinds ``table`` prices folded in as ReLUs, those priced by their
        ``own`` terms kept, and the names of the rest."""
        folded = [k for k in self.smooth if k in table and k not in own]
        relus = self.relus + round(sum(self.smooth[k] * table[k] for k in folded))
        layers = self.relu_layers + sum(self.smooth_layers.get(k, 0) for k in folded)
        keep = [k for k in self.smooth if k in own]
        return (replace(self, relus=relus, relu_layers=layers, smooth={k: self.smooth[k] for k in keep},
                        smooth_layers={k: self.smooth_layers.get(k, 0) for k in keep}),
                [k for k in self.smooth if k not in table and k not in own])

    @property
    def nonlinear_elements(self) -> int:
        """Comparisons plus elements of the per-element kinds (matmul, counted in MACs, left out)."""
        return self.relus + sum(n for k, n in self.smooth.items() if k != "matmul")


@dataclass
class Estimate:
    protocol: str
    relus: int
    relu_layers: int
    macs: int
    online_s: float
    offline_s: float
    online_bytes: float
    offline_bytes: float
    online_compute_s: float
    online_transfer_s: float
    online_rounds_s: float
    online_rounds: float  # round trips of the online phase
    setup_s: float  # one-time per session, not in total_s
    setup_bytes: float
    client_storage_bytes: float
    server_storage_bytes: float
    bandwidth_bps: float
    rtt_s: float
    threads: int
    requests: RequestLoad | None = None
    unpriced_kinds: list[str] = field(default_factory=list)  # smooth kinds the profile has no price for
    unpriced: dict[str, int] = field(default_factory=dict)  # their elements (matmul: MACs), left out of the costs
    priced_share: float = 1.0  # share of the non-linear elements (comparisons + per-element kinds) priced

    @property
    def lower_bound(self) -> bool:
        """True when some kinds are unpriced: the real cost is higher than this estimate."""
        return bool(self.unpriced)

    def unpriced_line(self) -> str | None:
        return unpriced_line(self.unpriced, self.protocol)

    @property
    def total_s(self) -> float:
        return self.online_s + self.offline_s

    @property
    def total_bytes(self) -> float:
        return self.online_bytes + self.offline_bytes

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_s"], out["total_bytes"] = self.total_s, self.total_bytes
        out["lower_bound"] = self.lower_bound
        return out


def unpriced_line(unpriced: dict[str, int], protocol: str) -> str | None:
    """One line naming the kinds ``protocol`` has no price for, with their elements, or None."""
    if not unpriced:
        return None
    kinds = ", ".join(f"{kind_label(k)} {n:,}" for k, n in unpriced.items())
    return (f"warning: the {protocol} estimate is a lower bound: it has no price for {kinds} "
            "(elements per input; matmul in MACs)")


def _check(name: str, value: float | None, minimum: float = 0.0, strict: bool = True) -> None:
    if value is not None and (value <= minimum if strict else value < minimum):
        raise RelucutError(f"{name} must be > {minimum:g}, got {value}")


def estimate(
    report: CostReport | Workload,
    profile: str | Profile = "delphi",
    *,
    bandwidth_bps: float | None = None,
    rtt_s: float | None = None,
    threads: int | None = None,
    requests_per_s: float | None = None,
    num_requests: int = 100,
    profile_file: str | None = None,
) -> Estimate:
    """Estimated private-inference cost of the network counted in ``report`` under ``profile``."""
    prof = resolve_profile(profile, profile_file)
    counted = report if isinstance(report, Workload) else Workload.of(report)
    work, unpriced = counted.priced(prof.kind_relu_equivalents, set(prof.kind_costs))
    missing = {k: counted.smooth[k] for k in unpriced}
    left_out = sum(n for k, n in missing.items() if k != "matmul")
    share = 1.0 - left_out / counted.nonlinear_elements if counted.nonlinear_elements else 1.0
    kind = {term: sum(work.smooth[k] * prof.kind_costs[k].get(term, 0.0) for k in work.smooth)
            for term in ("online_s", "online_bytes", "offline_s", "offline_bytes")}
    kind_layers = {term: sum(work.smooth_layers.get(k, 0) * prof.kind_costs[k].get(term, 0.0) for k in work.smooth)
                   for term in ("layer_online_s", "layer_online_bytes", "rounds_per_layer")}
    _check("bandwidth", bandwidth_bps)
    _check("rtt", rtt_s, strict=False)
    _check("threads", threads, 0)
    _check("requests per second", requests_per_s)
    bandwidth = bandwidth_bps or prof.bandwidth_bps
    rtt = prof.rtt_s if rtt_s is None else rtt_s
    threads = threads or prof.ref_threads
    speedup = threads / prof.ref_threads  # assumption: compute scales linearly with threads

    on_compute = (work.relus * prof.relu_online_s + work.macs * prof.mac_online_s
                  + work.truncations * prof.truncation_online_s + work.gathered * prof.gather_online_s
                  + kind["online_s"]) / speedup \
        + work.relu_layers * prof.layer_online_s + work.linear_layers * prof.linear_layer_online_s \
        + kind_layers["layer_online_s"]
    on_bytes = work.relus * prof.relu_online_bytes + work.macs * prof.mac_online_bytes \
        + work.truncations * prof.truncation_online_bytes + kind["online_bytes"] + kind_layers["layer_online_bytes"]
    on_transfer = on_bytes * 8 / bandwidth
    rounds = work.relu_layers * prof.rounds_per_layer + work.linear_layers * prof.rounds_per_linear_layer \
        + kind_layers["rounds_per_layer"]
    on_rounds = rounds * rtt
    online_s = max(on_compute, on_transfer) + on_rounds

    off_compute = (work.relus * prof.relu_offline_s + work.macs * prof.mac_offline_s + kind["offline_s"]) / speedup
    off_bytes = work.relus * prof.relu_offline_bytes + work.macs * prof.mac_offline_bytes + kind["offline_bytes"]
    offline_s = max(off_compute, off_bytes * 8 / bandwidth)

    result = Estimate(
        protocol=prof.name, relus=work.relus, relu_layers=work.relu_layers, macs=work.macs,
        online_s=online_s, offline_s=offline_s, online_bytes=on_bytes, offline_bytes=off_bytes,
        online_compute_s=on_compute, online_transfer_s=on_transfer, online_rounds_s=on_rounds, online_rounds=rounds,
        setup_s=prof.setup_s, setup_bytes=prof.setup_bytes,
        client_storage_bytes=work.relus * prof.client_storage_per_relu,
        server_storage_bytes=work.relus * prof.server_storage_per_relu,
        bandwidth_bps=bandwidth, rtt_s=rtt, threads=threads, unpriced_kinds=unpriced, unpriced=missing,
        priced_share=share,
    )
    if requests_per_s is not None:
        result.requests = simulate_requests(online_s, offline_s, requests_per_s, num_requests)
    return result
