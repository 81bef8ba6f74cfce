"""Entry point: ``relucut COMMAND``. User errors print one line and exit 2, never a traceback."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from relucut.errors import RelucutError

app = typer.Typer(
    name="relucut",
    help="Design networks with few ReLUs for fast private inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

err_console = Console(stderr=True)


def _register() -> None:
    # each module adds its commands to ``app``
    from relucut.cli import count as _count  # noqa: F401
    from relucut.cli import deepreduce as _deepreduce  # noqa: F401
    from relucut.cli import deepreshape as _deepreshape  # noqa: F401
    from relucut.cli import export as _export  # noqa: F401
    from relucut.cli import finegrained as _finegrained  # noqa: F401
    from relucut.cli import pi as _pi  # noqa: F401
    from relucut.cli import train as _train  # noqa: F401


def main() -> None:
    _register()
    try:
        app()
    except RelucutError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
