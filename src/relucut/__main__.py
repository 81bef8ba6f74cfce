"""``python -m relucut``: the CLI, with the current folder moved behind the installed packages.

``python -m`` puts the current folder first on ``sys.path``, so a ``torch.py`` or ``typer.py``
lying there would be imported in place of the real one; relucut must not run such files. The
folder stays on the path, last, for a user's own ``package.module:factory`` kept there.
"""

import os
import sys


def _current_folder_last() -> None:
    here = {"", ".", os.getcwd()}
    moved = [p for p in sys.path if p in here]
    sys.path[:] = [p for p in sys.path if p not in here] + moved[:1]


_current_folder_last()

from relucut.cli.app import main  # noqa: E402  (after the path is fixed)

main()
