"""Private-inference cost: a protocol cost model (estimate) and real 2PC measurement (SPU).

``relucut.pi.estimate(report, "delphi")`` turns a ``CostReport`` into seconds and bytes;
``relucut.pi.measure(model, input_size)`` runs the network under SecretFlow SPU (Cheetah).
"""

from relucut.pi.estimate import Estimate, Workload, estimate, unpriced_line
from relucut.pi.profiles import PROFILES, Profile, get_profile, load_profile, profile_names
from relucut.pi.requests import RequestLoad, simulate_requests

__all__ = [
    "PROFILES",
    "Estimate",
    "Profile",
    "RequestLoad",
    "Workload",
    "estimate",
    "get_profile",
    "load_profile",
    "profile_names",
    "simulate_requests",
    "unpriced_line",
]
