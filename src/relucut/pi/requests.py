"""Many requests: when does offline preprocessing land on the critical path (DeepReShape's fallacy)?

One server, requests arriving every 1/rate seconds (the first after one gap). Between requests the
server precomputes offline material for later ones, starting a bundle only when it can finish
before the next arrival. A request served from a ready bundle costs its online time; without one
it pays offline + online, and requests queue once the server cannot keep up.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RequestLoad:
    rate_per_s: float
    num_requests: int
    throughput_per_s: float  # completed requests per second over the whole run
    mean_latency_s: float
    p95_latency_s: float
    last_latency_s: float  # grows with num_requests when the server is overloaded
    offline_on_critical_path: float  # fraction of requests that waited for their own offline phase
    capacity_per_s: float  # the rate at which offline fully hides: 1 / (offline + online)


def simulate_requests(online_s: float, offline_s: float, rate_per_s: float, num_requests: int = 100) -> RequestLoad:
    gap = 1.0 / rate_per_s
    server_free = 0.0
    ready = 0  # precomputed offline bundles
    latencies, on_path = [], 0
    for k in range(num_requests):
        arrival = (k + 1) * gap
        if offline_s > 0:
            while ready < num_requests - k and server_free + offline_s <= arrival:
                server_free += offline_s
                ready += 1
        start = max(arrival, server_free)
        if offline_s > 0 and ready == 0:
            end = start + offline_s + online_s
            on_path += 1
        else:
            ready = max(0, ready - 1)
            end = start + online_s
        server_free = end
        latencies.append(end - arrival)
    ordered = sorted(latencies)
    return RequestLoad(
        rate_per_s=rate_per_s, num_requests=num_requests,
        throughput_per_s=num_requests / (server_free - gap) if server_free > gap else rate_per_s,
        mean_latency_s=sum(latencies) / len(latencies),
        p95_latency_s=ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        last_latency_s=latencies[-1],
        offline_on_critical_path=on_path / num_requests,
        capacity_per_s=1.0 / (offline_s + online_s),
    )
