"""DeepReDuce (Jha et al., ICML 2021): stage criticality, culling / thinning / reshaping candidates,
their training with KD, and the ReLU-accuracy Pareto frontier."""

from relucut.deepreduce.candidates import Candidate, cost_candidate, generate_candidates, relu_counts
from relucut.deepreduce.criticality import CriticalityTable, criticality_order, criticality_scores
from relucut.deepreduce.frontier import CandidateResult, best_under_budget, mark_frontier, pareto_indices

__all__ = [
    "Candidate", "CandidateResult", "CriticalityTable", "best_under_budget", "cost_candidate",
    "criticality_order", "criticality_scores", "generate_candidates", "mark_frontier", "pareto_indices",
    "relu_counts",
]
