"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class RelucutError(ValueError):
    """A problem with the user's input, phrased as what is wrong and how to fix it."""


def refuse_unknown_fields(cls: type, data: dict, what: str) -> None:
    """A config read from JSON names only fields of the dataclass ``cls``; anything else is refused."""
    import dataclasses

    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise RelucutError(f"unknown {what} field(s) {', '.join(unknown)}; remove them")
