"""Training engine: SGD with step/cosine schedules, KD from a teacher, extra loss terms, resumable runs.

A run directory holds config.json (resolved), metrics.jsonl (one line per epoch), last.pt (every
epoch, atomic: weights, optimizer, scheduler, RNG states), best.pt (best on validation) and
final.json (best_val_acc, best_epoch, test_acc of the best-on-validation weights, epochs, seconds).
Epochs are numbered from 1 in every file and display (``read_final`` converts older runs' final.json).
A loss, logged number or weight that is not finite stops the run with one line: nothing of that
epoch is kept, and a diverged or at-chance teacher is refused before a KD run starts.
Several GPUs: ``torchrun --nproc_per_node N -m relucut train ...`` (batch size is global).
"""

from relucut.train.batches import DeviceBatches
from relucut.train.build import build_model, load_checkpoint_model, load_data
from relucut.train.checkpoint import find_checkpoint, read_checkpoint
from relucut.train.config import TrainConfig
from relucut.train.evaluate import evaluate
from relucut.train.hooks import Callback, LossContext
from relucut.train.kd import kd_loss
from relucut.train.loop import read_final, train

__all__ = [
    "Callback",
    "DeviceBatches",
    "LossContext",
    "TrainConfig",
    "build_model",
    "evaluate",
    "find_checkpoint",
    "kd_loss",
    "load_checkpoint_model",
    "load_data",
    "read_checkpoint",
    "read_final",
    "train",
]
