"""Entry point: ``relucut COMMAND``. User errors print one line and exit 2, never a traceback.

Command modules import torch and the heavy parts of relucut inside their commands, never at the
top: registering every command (what ``relucut --help`` does) must stay well under a second.
"""

from __future__ import annotations

import errno
import sys

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from relucut.errors import RelucutError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
# a write that failed for want of space or permission: the user's to fix, so one line too
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)

err_console = Console(stderr=True)


def print_error(message: str) -> None:
    """One line on stderr; the message is printed as is (``relucut[data]`` is not rich markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class RelucutGroup(TyperGroup):
    """Turns a RelucutError (and an OSError of a full or read-only disk, wherever it came from) into
    one line + exit 2 and Ctrl-C into its message + exit 130, for every command and sub-command,
    whether run from the shell or from ``typer.testing.CliRunner``."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 (click's signature)
        try:
            return super().invoke(ctx)
        except RelucutError as exc:
            print_error(str(exc))
            raise typer.Exit(EXIT_USER_ERROR) from None
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS or not exc.filename:
                raise
            from relucut.rundir import write_failure

            verb = "access" if exc.errno in (errno.EACCES, errno.EPERM) else "write"
            print_error(str(write_failure(exc.filename, exc, verb)))
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt as exc:  # before click turns it into "Aborted!" and exit 1
            err_console.print(escape(str(exc) or "interrupted"), highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="relucut",
    help="Design networks with few ReLUs for fast private inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=RelucutGroup,
)


def _register() -> None:
    # each module adds its commands to ``app``
    from relucut.cli import count as _count  # noqa: F401
    from relucut.cli import deepreduce as _deepreduce  # noqa: F401
    from relucut.cli import deepreshape as _deepreshape  # noqa: F401
    from relucut.cli import export as _export  # noqa: F401
    from relucut.cli import frontier as _frontier  # noqa: F401
    from relucut.cli import methods as _methods
    from relucut.cli import pi as _pi  # noqa: F401
    from relucut.cli import train as _train  # noqa: F401

    _methods.register()  # one command per registered method, derived from its config


def main() -> None:
    _register()
    try:
        app()
    except RelucutError as exc:  # raised outside a command (e.g. while registering)
        print_error(str(exc))
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
