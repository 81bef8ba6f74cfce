"""DeepReDuce (Jha et al., ICML 2021): stage criticality, culling / thinning / reshaping candidates,
their training with KD, and the ReLU-accuracy Pareto frontier. Its config and registration are
``relucut.methods.deepreduce``."""

from relucut.deepreduce.candidates import Candidate, cost_candidate, generate_candidates, relu_counts
from relucut.deepreduce.criticality import CriticalityTable, criticality_order, criticality_scores
from relucut.deepreduce.frontier import best_under_budget, candidate_point, latency_frontier

__all__ = [
    "Candidate", "CriticalityTable", "best_under_budget", "candidate_point", "cost_candidate",
    "criticality_order", "criticality_scores", "generate_candidates", "latency_frontier", "relu_counts",
]
