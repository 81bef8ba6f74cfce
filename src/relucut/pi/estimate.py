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
before comparing and scatters them back). Profiles without these terms leave them at 0.

"ReLUs" here are ReLU-equivalent comparisons (a report's ``comparisons``): ReLU 1, ReLU6 and
Hardtanh 2, LeakyReLU/PReLU 1 per element, max-pooling (window - 1) per output. Smooth kinds
(GELU, SiLU, ...) are priced only where the profile's ``kind_relu_equivalents`` has them; the
others are listed in ``Estimate.unpriced_kinds``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from relucut.cost import CostReport
from relucut.errors import RelucutError
from relucut.pi.profiles import Profile, resolve_profile
from relucut.pi.requests import RequestLoad, simulate_requests


@dataclass(frozen=True)
class Workload:
    """What the cost model needs from a network."""

    relus: int  # ReLU-equivalent comparisons
    relu_layers: int  # layers that compare
    macs: int
    smooth: dict[str, int] = field(default_factory=dict)  # elements of smooth kinds
    smooth_layers: dict[str, int] = field(default_factory=dict)
    truncations: int = 0  # output elements of convs, linear layers and average pools
    gathered: int = 0  # elements of partially masked sites
    linear_layers: int = 0  # conv and linear layers

    @classmethod
    def of(cls, report: CostReport) -> Workload:
        layers = {kind: report.smooth_layers({kind}) for kind in report.smooth_by_kind}
        gathered = sum(s.total for s in report.sites if 0 < s.relus < s.total)
        return cls(relus=report.comparisons, relu_layers=report.comparison_layers, macs=report.macs,
                   smooth=report.smooth_by_kind, smooth_layers=layers, truncations=report.truncations,
                   gathered=gathered, linear_layers=report.linear_layers)

    def priced(self, table: dict[str, float]) -> tuple[Workload, list[str]]:
        """This workload with the smooth kinds ``table`` prices folded in as ReLUs, and the rest's names."""
        priced = [k for k in self.smooth if k in table]
        relus = self.relus + round(sum(self.smooth[k] * table[k] for k in priced))
        layers = self.relu_layers + sum(self.smooth_layers.get(k, 0) for k in priced)
        return (replace(self, relus=relus, relu_layers=layers, smooth={}, smooth_layers={}),
                [k for k in self.smooth if k not in table])


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

    @property
    def total_s(self) -> float:
        return self.online_s + self.offline_s

    @property
    def total_bytes(self) -> float:
        return self.online_bytes + self.offline_bytes

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_s"], out["total_bytes"] = self.total_s, self.total_bytes
        return out


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
    work = report if isinstance(report, Workload) else Workload.of(report)
    work, unpriced = work.priced(prof.kind_relu_equivalents)
    _check("bandwidth", bandwidth_bps)
    _check("rtt", rtt_s, strict=False)
    _check("threads", threads, 0)
    _check("requests per second", requests_per_s)
    bandwidth = bandwidth_bps or prof.bandwidth_bps
    rtt = prof.rtt_s if rtt_s is None else rtt_s
    threads = threads or prof.ref_threads
    speedup = threads / prof.ref_threads  # assumption: compute scales linearly with threads

    on_compute = (work.relus * prof.relu_online_s + work.macs * prof.mac_online_s
                  + work.truncations * prof.truncation_online_s + work.gathered * prof.gather_online_s) / speedup \
        + work.relu_layers * prof.layer_online_s + work.linear_layers * prof.linear_layer_online_s
    on_bytes = work.relus * prof.relu_online_bytes + work.macs * prof.mac_online_bytes \
        + work.truncations * prof.truncation_online_bytes
    on_transfer = on_bytes * 8 / bandwidth
    rounds = work.relu_layers * prof.rounds_per_layer + work.linear_layers * prof.rounds_per_linear_layer
    on_rounds = rounds * rtt
    online_s = max(on_compute, on_transfer) + on_rounds

    off_compute = (work.relus * prof.relu_offline_s + work.macs * prof.mac_offline_s) / speedup
    off_bytes = work.relus * prof.relu_offline_bytes + work.macs * prof.mac_offline_bytes
    offline_s = max(off_compute, off_bytes * 8 / bandwidth)

    result = Estimate(
        protocol=prof.name, relus=work.relus, relu_layers=work.relu_layers, macs=work.macs,
        online_s=online_s, offline_s=offline_s, online_bytes=on_bytes, offline_bytes=off_bytes,
        online_compute_s=on_compute, online_transfer_s=on_transfer, online_rounds_s=on_rounds, online_rounds=rounds,
        setup_s=prof.setup_s, setup_bytes=prof.setup_bytes,
        client_storage_bytes=work.relus * prof.client_storage_per_relu,
        server_storage_bytes=work.relus * prof.server_storage_per_relu,
        bandwidth_bps=bandwidth, rtt_s=rtt, threads=threads, unpriced_kinds=unpriced,
    )
    if requests_per_s is not None:
        result.requests = simulate_requests(online_s, offline_s, requests_per_s, num_requests)
    return result
