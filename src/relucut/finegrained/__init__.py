"""Fine-grained linearization to a ReLU budget: SNL, SENet, and SENet + shallow (gated branching, AC).

The algorithms; their configs and registrations are ``relucut.methods.snl`` / ``relucut.methods.senet``."""

from relucut.finegrained.artifact import deployable, export, load_export, plan_of
from relucut.budgets import parse_budget
from relucut.finegrained.budget import allocate_layer_budgets, binarize_to_budget, check_budget
from relucut.finegrained.gated import GatedBranch, gate_value, shallow_twin
from relucut.finegrained.losses import LossWeights, attention_transfer, combined_loss, pram
from relucut.finegrained.pipeline import run_senet, run_snl
from relucut.finegrained.mask_site import LearnableMaskSite, install_mask_sites
from relucut.finegrained.senet import senet
from relucut.finegrained.snl import snl

__all__ = [
    "GatedBranch", "LearnableMaskSite", "LossWeights",
    "allocate_layer_budgets", "binarize_to_budget", "check_budget", "combined_loss", "deployable", "export",
    "gate_value", "install_mask_sites", "load_export", "parse_budget", "plan_of", "pram", "attention_transfer",
    "run_senet", "run_snl", "senet", "shallow_twin", "snl",
]
