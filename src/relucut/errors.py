"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class RelucutError(ValueError):
    """A problem with the user's input, phrased as what is wrong and how to fix it."""
