"""Progress display (rich, on stderr) and optional TensorBoard logging."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from relucut.errors import RelucutError


class TrainProgress:
    """An epoch bar and a batch bar with loss / accuracy / images per second; silent when disabled."""

    def __init__(self, enabled: bool, epochs: int, start: int, label: str = "epochs"):
        self.enabled = enabled
        if not enabled:
            return
        self.console = Console(stderr=True)
        self.label = "epoch" if label == "epochs" else label
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.bar.start()
        self.epochs = self.bar.add_task(label, total=epochs, completed=start, info="")
        self.steps = None

    def start_epoch(self, epoch: int, batches: int) -> None:
        if not self.enabled:
            return
        if self.steps is not None:
            self.bar.remove_task(self.steps)
        self.steps = self.bar.add_task(f"epoch {epoch + 1}", total=batches, info="")

    def step(self, info: str | None = None) -> None:
        if self.enabled:
            self.bar.update(self.steps, advance=1, **({"info": info} if info is not None else {}))

    def end_epoch(self, metrics: dict) -> None:
        if not self.enabled:
            return
        val = f"val {100 * metrics['val_acc']:.1f}%  " if metrics.get("val_acc") is not None else ""
        info = (f"loss {metrics['train_loss']:.3f}  train {100 * metrics['train_acc']:.1f}%  "
                f"{val}{metrics['images_per_s']:.0f} img/s")
        self.bar.update(self.epochs, advance=1, info=info)
        line = f"{self.label} {metrics['epoch']}: {info}  lr {metrics['lr']:.4g}"  # epochs from 1
        self.console.print(line, highlight=False)

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()


class TensorBoard:
    def __init__(self, enabled: bool, run_dir: Path):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RelucutError("TensorBoard logging needs the extra: pip install 'relucut[tensorboard]'") from None
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, metrics: dict) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, metrics["epoch"])  # 1-based, as logged
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
