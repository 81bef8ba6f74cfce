"""ReLU budgets as users write them: one parser for every command's ``--budget`` / ``--budgets``.

A budget is a whole, positive number of ReLUs:

- digits, optionally with thousands separators: ``25000``, ``25,000``, ``25_000``, ``1,500,000``.
  A separator (commas or underscores, one kind per number) must be followed by exactly three digits;
- optionally a decimal part and a unit, ``k`` = 1,000 or ``M`` = 1,000,000 (either case, a space
  before it is allowed): ``25k``, ``25K``, ``1.5M``, ``1.5m``, ``12.5 k``;
- the value must be a whole number of ReLUs (``1.2345k`` and ``2.5`` are refused) and at least 1.

A list (``--budgets``) separates budgets with commas. Since a comma is also a thousands separator,
each budget is read as a number in thousands format (1-3 digits, then groups of ``,ddd``, or
of ``_ddd``) when that number ends at a comma or the end of the list, else as plain digits. So
``12,500`` and ``1,500,000`` are one budget each; ``12k,25k``, ``12,5000``, ``1234,567`` and
``100, 200`` (a space after the comma) are two; ``100,200,300`` is one, 100200300: write small
budgets with spaces, ``100, 200, 300``.

A latency budget (``--latency-budget``) is a positive duration with a unit: ``1.5s``, ``800ms``,
``2min``; a list separates them with commas (``0.5s,1s,2s``).

Every refusal is a one-line :class:`~relucut.errors.RelucutError` naming the option and the fix.
"""

from __future__ import annotations

import re
from decimal import Decimal

from relucut.errors import RelucutError

UNITS = {"": 1, "k": 1_000, "m": 1_000_000}
# one budget, ending where a list would go on (a comma) or at the end: the lookahead makes
# '12,5000' back off to '12' rather than take '12,500' and leave a stray '0'
_BUDGET = re.compile(
    r"\s*(?P<whole>\d{1,3}(?:,\d{3})+|\d{1,3}(?:_\d{3})+|\d+)(?P<fraction>\.\d+)?\s*(?P<unit>[kKmM]?)\s*(?=,|\Z)",
    re.ASCII,  # digits are 0-9 only
)
EXAMPLES = "25000, 25,000, 25k or 1.5M"


def parse_budget(text: str | int, option: str = "--budget") -> int:
    """One ReLU budget: '25,000' -> 25000, '25k' -> 25000, '1.5M' -> 1500000 (rules: module doc)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return _checked(Decimal(text), str(text), option)
    raw = str(text)
    match = _BUDGET.fullmatch(raw)
    if not match:
        raise _unreadable(raw, option)
    return _value(match, option)


def parse_budgets(text: str, option: str = "--budgets") -> list[int]:
    """Comma-separated ReLU budgets: '12k,25k,50k' -> [12000, 25000, 50000]; '12,500' -> [12500]."""
    raw = str(text)
    budgets, pos = [], 0
    while True:
        match = _BUDGET.match(raw, pos)
        if not match:
            raise _unreadable(raw[pos:].split(",")[0], option, whole=raw)
        budgets.append(_value(match, option))
        if match.end() == len(raw):
            return budgets
        pos = match.end() + 1  # past the separating comma


def _value(match: re.Match[str], option: str) -> int:
    number = Decimal(match["whole"].replace(",", "").replace("_", "") + (match["fraction"] or ""))
    return _checked(number * UNITS[match["unit"].lower()], match.group().strip(), option)


def _checked(value: Decimal, text: str, option: str) -> int:
    if value != value.to_integral_value():
        raise RelucutError(f"{option} must be a whole number of ReLUs, got {text!r} = {value.normalize():f}; "
                           "round it")
    if value < 1:
        raise RelucutError(f"{option} must be at least 1 ReLU, got {text!r}; give a positive count like 25k")
    return int(value)


def _unreadable(text: str, option: str, whole: str | None = None) -> RelucutError:
    if not (whole if whole is not None else text).strip():
        return RelucutError(f"{option} is empty; give a ReLU count like {EXAMPLES}")
    if not text.strip():
        return RelucutError(f"{option} has an empty budget in {whole!r}; give a ReLU count like {EXAMPLES}")
    if text.strip().startswith("-"):
        return RelucutError(f"{option} must be at least 1 ReLU, got {text.strip()!r}; "
                            "give a positive count like 25k")
    where = f" in {whole!r}" if whole is not None and whole != text else ""
    return RelucutError(f"{option} takes a whole number of ReLUs like {EXAMPLES}, got {text!r}{where}")


def parse_latency_budgets(text: str, option: str = "--latency-budget") -> list[float]:
    """Comma-separated latency budgets in seconds: '1.5s' -> [1.5], '800ms,2s' -> [0.8, 2.0]."""
    from relucut.units import parse_durations

    return parse_durations(text, option, "1.5s or 800ms")


__all__ = ["parse_budget", "parse_budgets", "parse_latency_budgets"]
